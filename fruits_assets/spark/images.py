"""Listing image files with Spark and labelling them from their paths."""

from __future__ import annotations

from collections.abc import Iterator
from functools import reduce

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from fruits_assets.vision.paths import IMAGE_EXTENSIONS, label_and_split


def _any_case(extension: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in extension)


IMAGE_GLOB = "*.{" + ",".join(_any_case(e.lstrip(".")) for e in IMAGE_EXTENSIONS) + "}"


def read_image_files(spark: SparkSession, root: str) -> DataFrame:
    """Every image file below `root`, recursively: path, modificationTime, length, content."""
    return (
        spark.read.format("binaryFile")
        .option("recursiveFileLookup", "true")
        .option("pathGlobFilter", IMAGE_GLOB)
        .load(root)
    )


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
