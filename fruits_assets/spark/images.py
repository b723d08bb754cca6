"""Listing image files with Spark and labelling them from their paths."""

from __future__ import annotations

from collections.abc import Iterator
from functools import reduce
from urllib.parse import unquote

import fsspec
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType, StringType, StructField, StructType

from fruits_assets.vision.paths import IMAGE_EXTENSIONS, UNLABELED, label_and_split
from fruits_assets.vision.preprocess import rejection_of


def _any_case(extension: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in extension)


IMAGE_GLOB = "*.{" + ",".join(_any_case(e.lstrip(".")) for e in IMAGE_EXTENSIONS) + "}"


def list_image_files(root: str) -> dict[str, int]:
    """Every image file below `root` and its size, keyed by Hadoop path string (`file:/…`, `s3a://…`)."""
    fs, base = fsspec.core.url_to_fs(root)
    scheme = root.split("://", 1)[0] if "://" in root else None
    found = fs.find(base, detail=True)
    return {
        f"{scheme}://{p}" if scheme else f"file:{p}": int(info.get("size") or 0)
        for p, info in found.items()
        if p.lower().endswith(IMAGE_EXTENSIONS)
    }


def hadoop_path(uri: str) -> str:
    """Spark's listing gives URIs (`file:///a%20b`); its `path` column, Hadoop path strings (`file:/a b`)."""
    path = unquote(uri)
    return "file:/" + path.removeprefix("file:///") if path.startswith("file:///") else path


def _read_bytes(paths: Iterator[pd.Series]) -> Iterator[pd.Series]:
    for batch in paths:
        contents = []
        for path in batch:
            with fsspec.open(path, "rb") as file:
                contents.append(file.read())
        yield pd.Series(contents)


def read_image_files(spark: SparkSession, root: str, listed: dict[str, int]) -> DataFrame:
    """The image files `listed` below `root`: path, modificationTime, length, content, content_hash.

    Spark's binaryFile source reads the bulk, but it silently skips empty files,
    and its listing names starting with `_` or `.` (cameras name photos
    `_DSC0001.JPG`): those, found by comparing the two listings on the driver,
    are read by a Python task instead. `content_hash` (SHA-256 of the bytes)
    identifies an image whatever its name: features are reused by it across runs.
    """
    files = (
        spark.read.format("binaryFile")
        .option("recursiveFileLookup", "true")
        .option("pathGlobFilter", IMAGE_GLOB)
        .load(root)
    )
    scanned = {hadoop_path(uri) for uri in files.inputFiles()}
    skipped = sorted(path for path, size in listed.items() if path not in scanned or size == 0)
    if skipped:
        apart = spark.createDataFrame([(p,) for p in skipped], "path string")
        apart = apart.withColumn("content", F.pandas_udf(_read_bytes, BinaryType())("path")).select(
            "path",
            F.lit(None).cast("timestamp").alias("modificationTime"),
            F.length("content").cast("long").alias("length"),
            "content",
        )
        files = files.unionByName(apart)
    return files.withColumn("content_hash", F.sha2("content", 256))


def is_image_path(path: str) -> Column:
    """Whether the path column ends with an image extension, in any case."""
    lowered = F.lower(F.col(path))
    return reduce(lambda a, b: a | b, [lowered.endswith(e) for e in IMAGE_EXTENSIONS])


_LABELS = StructType([StructField("label", StringType()), StructField("split", StringType())])


def with_labels(images: DataFrame, root: str) -> DataFrame:
    """Add `label` (parent folder, verbatim) and `split` (grandparent folder below the root, or null)."""

    def labels(paths: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        for batch in paths:
            pairs = [label_and_split(p, root) for p in batch]
            yield pd.DataFrame(pairs, columns=["label", "split"], dtype=object)

    labeled = images.withColumn("_labels", F.pandas_udf(labels, _LABELS)("path"))
    return labeled.select(*images.columns, "_labels.label", "_labels.split")


_REJECTION = StructType([StructField("reason", StringType()), StructField("message", StringType())])


def with_rejections(images: DataFrame, max_pixels: int) -> DataFrame:
    """Add `reason` and `message`: null for an image that decodes and has a label, why not otherwise.

    Each image is decoded in full to know (cheap next to the model); labels must
    already be there.
    """

    def rejections(contents: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        for batch in contents:
            found = [rejection_of(c, max_pixels) for c in batch]
            yield pd.DataFrame(
                [(r.reason, r.message) if r else (None, None) for r in found],
                columns=["reason", "message"],
                dtype=object,
            )

    decoded = F.pandas_udf(rejections, _REJECTION)("content")
    unlabeled = F.struct(
        F.lit(UNLABELED).alias("reason"),
        F.lit("a file directly under the images root has no label folder").alias("message"),
    )
    screened = images.withColumn("_rejection", F.when(F.col("label").isNull(), unlabeled).otherwise(decoded))
    return screened.select(*images.columns, "_rejection.reason", "_rejection.message")
