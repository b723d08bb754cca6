"""What a featurization run has to do: which images reach the model, which keep stored features, and how many."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from fruits_assets.spark.featurize import FEATURES_TYPE
from fruits_assets.spark.files import path_exists, recover_interrupted

FEATURE_COLUMNS = ("path", "label", "split", "content_hash", "featurizer", "features")
IMAGES_PER_TASK = 1024  # tasks in multiples of the cores: even load; few, as each task start costs ~0.2 s idle per core
_KNOWN = StructType(
    [
        StructField("path", StringType()),
        StructField("content_hash", StringType()),
        StructField("featurizer", StringType()),
        StructField("features", FEATURES_TYPE),
    ]
)


@dataclass(frozen=True)
class FeaturizationPlan:
    """The images to featurize (`path, label, split, content_hash, content`, spread over `tasks`) and the
    feature rows reused as they are; `new`, `reused` and `removed` count them against the stored features."""

    to_featurize: DataFrame
    reused: DataFrame
    new: int
    reused_count: int
    removed: int
    tasks: int

    def counts(self) -> dict[str, int]:
        return {"new": self.new, "reused": self.reused_count, "removed": self.removed}


def stored_features(spark: SparkSession, path: str) -> DataFrame:
    """`path, content_hash, featurizer, features` stored at `path`; empty if none (or from an older layout)."""
    recover_interrupted(spark, path)
    if path_exists(spark, path):
        stored = spark.read.parquet(path)
        if set(_KNOWN.fieldNames()) <= set(stored.columns):
            return stored.select(*_KNOWN.fieldNames())
    return spark.createDataFrame([], _KNOWN)


def task_count(slots: int, images: int, per_task: int = IMAGES_PER_TASK) -> int:
    """Tasks in a multiple of the cores, each with at most about `per_task` images."""
    return slots * max(1, math.ceil(images / (slots * per_task)))


def plan_featurization(
    spark: SparkSession, raw: DataFrame, labeled: DataFrame, stored_path: str, featurizer: str
) -> FeaturizationPlan:
    """Match the labeled images against the features stored at `stored_path` by content hash.

    An image whose bytes (SHA-256) `featurizer` already featurized keeps those
    features, so only new or changed images reach the model; a renamed file is not
    recomputed, and features of a different featurizer are never reused.
    """
    labeled = labeled.select("path", "label", "split", "content_hash")
    stored = stored_features(spark, stored_path)
    known = (
        stored.filter(F.col("featurizer") == featurizer)
        .select("content_hash", "featurizer", "features")
        .dropDuplicates(["content_hash"])
    )
    reused = labeled.join(known, "content_hash").select(*FEATURE_COLUMNS)
    todo = labeled.join(known.select("content_hash"), "content_hash", "left_anti")
    new = todo.count()
    tasks = task_count(spark.sparkContext.defaultParallelism, new)
    return FeaturizationPlan(
        to_featurize=raw.select("path", "content").join(F.broadcast(todo), "path").repartition(tasks),
        reused=reused,
        new=new,
        reused_count=reused.count(),
        removed=stored.join(labeled, "path", "left_anti").count(),
        tasks=tasks,
    )


@contextmanager
def arrow_batch_size(spark: SparkSession, rows: int) -> Iterator[None]:
    """Rows per Arrow batch sent to Python workers, inside the block only; the session's value after it."""
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    previous = spark.conf.get(key)
    spark.conf.set(key, str(rows))
    try:
        yield
    finally:
        spark.conf.set(key, previous)
