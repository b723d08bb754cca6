"""Listing image files with Spark and labelling them from their paths."""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import reduce
from urllib.parse import unquote

import fsspec
import pandas as pd
from fsspec.implementations.local import LocalFileSystem
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType, StringType, StructField, StructType

from fruits_assets.vision.paths import IMAGE_EXTENSIONS, UNLABELED, label_and_split
from fruits_assets.vision.preprocess import rejection_of


def _any_case(extension: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in extension)


IMAGE_GLOB = "*.{" + ",".join(_any_case(e.lstrip(".")) for e in IMAGE_EXTENSIONS) + "}"


def _unreadable(error: OSError) -> None:
    raise error  # a folder that cannot be listed fails the run: its images would be missed without a trace


def _local_image_files(base: str) -> dict[str, int]:
    """Image files below a local folder and their sizes, through symlinked folders as Hadoop's listing goes.

    A symlinked folder is listed under its link's path, where Spark reads it. A link
    back to a folder above it is an error: Spark would follow it some forty times
    over and read the same images again under ever longer paths.
    """
    if os.path.isfile(base):
        return {base: os.path.getsize(base)}
    found: dict[str, int] = {}
    above = {base: {os.path.realpath(base)}}
    for folder, subfolders, files in os.walk(base, onerror=_unreadable, followlinks=True):
        chain = above.pop(folder)
        for sub in subfolders:
            path = os.path.join(folder, sub)
            real = os.path.realpath(path)
            if real in chain:
                raise ValueError(f"{path} links back to {real}, a folder above it: remove the link (a symlink loop)")
            above[path] = chain | {real}
        for name in files:
            if name.lower().endswith(IMAGE_EXTENSIONS):  # other files, broken links among them, are not read
                path = os.path.join(folder, name)
                found[path] = os.path.getsize(path)
    return found


def list_image_files(root: str) -> dict[str, int]:
    """Every image file below `root` and its size, keyed by Hadoop path string (`file:/…`, `s3a://…`)."""
    fs, base = fsspec.core.url_to_fs(root)
    if isinstance(fs, LocalFileSystem):
        found = {f"file:{p}": size for p, size in _local_image_files(base).items()}
    else:
        scheme = root.split("://", 1)[0]
        found = {f"{scheme}://{p}": int(info.get("size") or 0) for p, info in fs.find(base, detail=True).items()}
    return {path: size for path, size in found.items() if path.lower().endswith(IMAGE_EXTENSIONS)}


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


def binary_files(spark: SparkSession, root: str) -> DataFrame:
    """Spark's own reader of the image files below `root`: what it lists, it reads."""
    reader = spark.read.format("binaryFile").option("recursiveFileLookup", "true")
    return reader.option("pathGlobFilter", IMAGE_GLOB).load(root)


def read_image_files(spark: SparkSession, root: str, listed: dict[str, int]) -> DataFrame:
    """The image files `listed` below `root`: path, modificationTime, length, content, content_hash.

    Spark's binaryFile source reads the bulk, but it silently skips empty files,
    and its listing names starting with `_` or `.` (cameras name photos
    `_DSC0001.JPG`): those, found by comparing the two listings on the driver,
    are read by a Python task instead. `content_hash` (SHA-256 of the bytes)
    identifies an image whatever its name: features are reused by it across runs.
    """
    files = binary_files(spark, root)
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


_SCREENING = StructType([StructField(name, StringType()) for name in ("label", "split", "reason", "message")])
_NO_LABEL = "a file directly under the images root has no label folder"


def _screen(path: str, content: bytes, root: str, max_pixels: int) -> tuple[str | None, ...]:
    """`label, split, reason, message` of one image: reason and message are null for an image to featurize."""
    label, split = label_and_split(path, root)
    if label is None:
        return label, split, UNLABELED, _NO_LABEL
    rejected = rejection_of(content, max_pixels)
    return (label, split, rejected.reason, rejected.message) if rejected else (label, split, None, None)


def with_screening(images: DataFrame, root: str, max_pixels: int) -> DataFrame:
    """Add `label` (parent folder, verbatim), `split` (grandparent below the root, or null), `reason` and `message`.

    One Python pass labels and decodes each image in full to know whether it can
    be featurized (cheap next to the model): a single UDF keeps one Python worker
    per task.
    """

    def screen(batches: Iterator[tuple[pd.Series, pd.Series]]) -> Iterator[pd.DataFrame]:
        for paths, contents in batches:
            rows = [_screen(p, c, root, max_pixels) for p, c in zip(paths, contents, strict=True)]
            yield pd.DataFrame(rows, columns=_SCREENING.fieldNames(), dtype=object)

    screened = images.withColumn("_screening", F.pandas_udf(screen, _SCREENING)("path", "content"))
    return screened.select(*images.columns, *(f"_screening.{name}" for name in _SCREENING.fieldNames()))
