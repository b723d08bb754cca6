"""Reading the listed image files with Spark: their bytes and the SHA-256 that identifies them."""

from __future__ import annotations

from collections.abc import Iterator
from functools import reduce
from urllib.parse import unquote

import fsspec
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType

from fruits_assets.vision.paths import IMAGE_EXTENSIONS


def _any_case(extension: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in extension)


IMAGE_GLOB = "*.{" + ",".join(_any_case(e.lstrip(".")) for e in IMAGE_EXTENSIONS) + "}"


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
