"""What a run has to read: the listed files whose version or recipe changed since they were screened, and the gone."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import reduce

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

FILES_PER_TASK = 1024  # tasks in multiples of the cores: even load; few, as each task start costs ~0.2 s idle per core


@dataclass(frozen=True)
class IngestPlan:
    """`todo`: the raw rows to read (spread over `tasks`); `gone`: paths screened before and no longer listed."""

    todo: DataFrame
    gone: DataFrame
    todo_count: int
    kept: int
    removed: int
    tasks: int


def task_count(slots: int, files: int, per_task: int = FILES_PER_TASK) -> int:
    """Tasks in a multiple of the cores, each with at most about `per_task` files."""
    return slots * max(1, math.ceil(files / (slots * per_task)))


def plan_ingest(
    spark: SparkSession,
    raw: DataFrame,
    labeled: DataFrame | None,
    rejected: DataFrame | None,
    features: DataFrame | None,
    recipe: str,
) -> IngestPlan:
    """Compare the listing with what was screened: a file is done if its stamp and recipe match, and, when it
    was labeled, its features are stored. Everything else listed is read again; what is gone, removed.

    One Spark job counts all three; the columns read are paths, stamps and recipes, never features.
    """
    screened = [t.select("path", "stamp", "recipe") for t in (labeled, rejected) if t is not None]
    empty = spark.createDataFrame([], "path string, stamp string, recipe string")
    before = reduce(DataFrame.unionByName, screened, empty)
    if labeled is not None:
        stored = features.select("path").distinct() if features is not None else empty.select("path")
        unfeaturized = labeled.select("path").join(stored, "path", "left_anti").withColumn("unfeaturized", F.lit(True))
        before = before.join(unfeaturized, "path", "left").filter(F.col("unfeaturized").isNull()).drop("unfeaturized")
    done = before.filter(F.col("recipe") == recipe).select("path", "stamp", F.lit(True).alias("done")).distinct()
    listed = raw.select("path", "stamp", F.lit(True).alias("listed"))
    counts = (
        listed.join(done, ["path", "stamp"], "left")
        .agg(F.count("*").alias("listed"), F.count_if(F.col("done").isNull()).alias("todo"))
        .first()
    )
    # Computed once each (checkpointed): the commits that follow read them again, three tables' worth.
    gone = before.select("path").distinct().join(listed.select("path"), "path", "left_anti").localCheckpoint()
    removed = gone.count()
    todo_count = int(counts["todo"])
    tasks = task_count(spark.sparkContext.defaultParallelism, todo_count)
    todo = raw.join(done, ["path", "stamp"], "left_anti").localCheckpoint().repartition(tasks)
    return IngestPlan(todo, gone, todo_count, int(counts["listed"]) - todo_count, removed, tasks)


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
