"""What a run has to read, in which chunks: every listed file not consistently screened already, and the gone.

A file is done when its rows across the three tables agree with its listing: it is
in `labeled_images` (its stamp and recipe current) with features of the current
featurizer and the same hash, and not rejected; or it is in `rejected_images` (stamp
and recipe current, a verdict on its bytes rather than a failed read) and in neither
of the others. Anything else listed is read again: a new or changed file, one a
killed run left half-committed, one whose read failed last time. Paths that any
table holds and the listing no longer does are gone. The plan compares the tables at
the versions it read them at, so what it decided does not move while chunks commit.
When none of the three tables exists yet (a first run), every listed file is read and
nothing is compared: no join.

When the last complete screening left every listed file done and the tables as it
committed them, the plan comes from what the listing's table changed since then (its
change feed, `plan_changes`): the paths added or with another stamp are read, those
removed are gone, and no other table is read unless a changed path was held before.
Every other file was done then and is still, so this reads and removes what the full
comparison would, at the cost of the change (it merges, where the full comparison
knows a table did not hold a path and appends).

The files to read are cut into chunks of about `chunk_files`, contiguous ranges of
paths in order: each is featurized and committed on its own, so a long first run
keeps what it committed and the next run, planning again, goes on from there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

FILES_PER_TASK = 1024  # tasks in multiples of the cores: even load; few, as each task start costs ~0.2 s idle per core
SAMPLE_PER_CHUNK = 64  # paths sampled per chunk to place the boundaries between chunks
RETRIED_REASON = "unreadable"
LISTING_ERROR = "error:"  # a stamp that is the listing's error: a verdict of the listing, not a failed read
# For each file to read, whether each table held its path when planned: a chunk none of whose paths a table
# holds (and that deletes nothing there) is appended to it, with no join against the table.
HELD = {"_in_labeled": "l_stamp", "_in_rejected": "r_stamp", "_in_features": "f_featurizer"}
CHANGE_COLUMNS = ("_change_type", "_commit_version", "_commit_timestamp")  # what a change feed adds to the rows


@dataclass(frozen=True)
class Chunk:
    """Paths in [`first`, `after`): None at either end means unbounded."""

    first: str | None
    after: str | None

    def condition(self) -> Column:
        path = F.col("path")
        bounds = [path >= self.first if self.first is not None else None, path < self.after if self.after else None]
        kept = [b for b in bounds if b is not None]
        return kept[0] & kept[1] if len(kept) == 2 else kept[0] if kept else F.lit(True)


@dataclass(frozen=True)
class IngestPlan:
    """`todo`: the raw rows to read (and `HELD`'s flags), in `chunks`; `gone`: paths some table holds that are
    no longer listed.

    `touched` is every path this run changes (read or gone); `before` is what
    `labeled_images` held for them when planned, to update the label counts and the
    hashes' labels by the change.
    """

    todo: DataFrame
    gone: DataFrame
    touched: DataFrame
    before: DataFrame
    todo_count: int
    listed: int
    kept: int
    removed: int
    chunks: list[Chunk]
    duplicated: int

    def release(self) -> None:
        for frame in (self.todo, self.gone, self.touched, self.before):
            frame.unpersist()


def task_count(slots: int, files: int, per_task: int = FILES_PER_TASK) -> int:
    """Tasks in a multiple of the cores, each with at most about `per_task` files."""
    return slots * max(1, math.ceil(files / (slots * per_task)))


def done_condition(recipe: str, featurizer: str) -> Column:
    """Whether a listed file's rows (columns `l_*`, `r_*`, `f_*` joined to the listing) say it is done."""
    stamp = F.col("stamp")
    labeled = (F.col("l_stamp") == stamp) & (F.col("l_recipe") == recipe)
    featurized = (F.col("f_featurizer") == featurizer) & (F.col("f_hash") == F.col("l_hash"))
    verdict = (F.col("r_reason") != RETRIED_REASON) | stamp.startswith(LISTING_ERROR)
    rejected = (F.col("r_stamp") == stamp) & (F.col("r_recipe") == recipe) & verdict
    accepted_done = labeled & featurized & F.col("r_stamp").isNull() & F.col("r_reason").isNull()
    rejected_done = rejected & F.col("l_stamp").isNull() & F.col("f_featurizer").isNull()
    return F.coalesce(accepted_done | rejected_done, F.lit(False))


def _empty(spark: SparkSession, schema: str) -> DataFrame:
    return spark.createDataFrame([], schema)


def plan_ingest(
    spark: SparkSession,
    raw: DataFrame,
    labeled: DataFrame | None,
    rejected: DataFrame | None,
    features: DataFrame | None,
    listed_rows: int,
    recipe: str,
    featurizer: str,
    chunk_files: int,
) -> IngestPlan:
    """Compare the listing (`listed_rows` files) with the three tables, each read at a fixed version: what to read,
    in which chunks. A table holding a path twice shows as `duplicated` rows (the join multiplies them)."""
    if labeled is None and rejected is None and features is None:
        return _first_plan(spark, raw, listed_rows, chunk_files)
    lab = (
        labeled.select(
            "path",
            F.col("stamp").alias("l_stamp"),
            F.col("recipe").alias("l_recipe"),
            F.col("content_hash").alias("l_hash"),
        )
        if labeled is not None
        else _empty(spark, "path string, l_stamp string, l_recipe string, l_hash string")
    )
    rej = (
        rejected.select(
            "path",
            F.col("stamp").alias("r_stamp"),
            F.col("recipe").alias("r_recipe"),
            F.col("reason").alias("r_reason"),
        )
        if rejected is not None
        else _empty(spark, "path string, r_stamp string, r_recipe string, r_reason string")
    )
    feat = (
        features.select("path", F.col("featurizer").alias("f_featurizer"), F.col("content_hash").alias("f_hash"))
        if features is not None
        else _empty(spark, "path string, f_featurizer string, f_hash string")
    )
    status = (
        raw.join(lab, "path", "left")
        .join(rej, "path", "left")
        .join(feat, "path", "left")
        .withColumn("_done", done_condition(recipe, featurizer))
    )
    counted = Observation("plan")
    held = [F.col(column).isNotNull().alias(flag) for flag, column in HELD.items()]
    todo = (
        status.observe(counted, F.count(F.lit(1)).alias("rows"), F.count_if(~F.col("_done")).alias("todo"))
        .filter(~F.col("_done"))
        .select(*raw.columns, *held)
        .persist(StorageLevel.DISK_ONLY)
    )
    todo.count()
    counts = counted.get
    known = lab.select("path").unionByName(rej.select("path")).unionByName(feat.select("path")).distinct()
    gone = known.join(raw.select("path"), "path", "left_anti").persist(StorageLevel.DISK_ONLY)
    removed = gone.count()
    touched = todo.select("path").unionByName(gone).persist(StorageLevel.DISK_ONLY)
    before = (
        labeled.select("path", "label", "split", "content_hash").join(touched, "path", "left_semi")
        if labeled is not None
        else _empty(spark, "path string, label string, split string, content_hash string")
    ).persist(StorageLevel.DISK_ONLY)
    todo_count, rows = int(counts["todo"]), int(counts["rows"])
    return IngestPlan(
        todo=todo,
        gone=gone,
        touched=touched,
        before=before,
        todo_count=todo_count,
        listed=listed_rows,
        kept=listed_rows - todo_count,
        removed=removed,
        chunks=chunk_ranges(todo, todo_count, chunk_files),
        duplicated=rows - listed_rows,
    )


def _first_plan(spark: SparkSession, raw: DataFrame, listed_rows: int, chunk_files: int) -> IngestPlan:
    """No table exists yet: every listed file is to read and appended, none held, none gone. What the comparison
    would find, without a join (the listing is read at its pinned version, so it does not move)."""
    todo = raw.select(*raw.columns, *(F.lit(False).alias(flag) for flag in HELD))
    return IngestPlan(
        todo=todo,
        gone=_empty(spark, "path string"),
        touched=raw.select("path"),
        before=_empty(spark, "path string, label string, split string, content_hash string"),
        todo_count=listed_rows,
        listed=listed_rows,
        kept=0,
        removed=0,
        chunks=chunk_ranges(todo, listed_rows, chunk_files),
        duplicated=0,
    )


def plan_changes(
    spark: SparkSession,
    changes: DataFrame,
    labeled: Callable[[], DataFrame],
    listed_rows: int,
    chunk_files: int,
) -> IngestPlan:
    """The plan from the listing's change feed since the last complete screening (`changes`), which left every
    file listed then done, each in the tables exactly once, and no read to retry.

    A path's last change says whether it is listed now (its row then is the one to
    read) or gone; its first, whether it was listed, so held by the tables, before, and
    with which stamp: a path listed again with the stamp it had then (moved out and
    back, its times kept) is still done and is not read. A path not held before is in
    no table: its chunk is appended; one held before is merged (whichever of the
    tables held it). `labeled` is read only when a changed path was held before, for
    what it held of them.
    """
    columns = [c for c in changes.columns if c not in CHANGE_COLUMNS]
    by_path = Window.partitionBy("path")
    version, kind = F.col("_commit_version"), F.col("_change_type")
    ranked = (
        changes.withColumn("_first", F.min(version).over(by_path))
        .withColumn("_last", F.max(version).over(by_path))
        .persist(StorageLevel.DISK_ONLY)
    )
    frames = [ranked]
    try:
        before = ranked.filter((version == F.col("_first")) & kind.isin("delete", "update_preimage"))
        existed = before.select("path", F.col("stamp").alias("_stamp_before")).dropDuplicates(["path"])
        current = ranked.filter((version == F.col("_last")) & kind.isin("insert", "update_postimage"))
        counted = Observation("changes")
        held = F.col("_stamp_before").isNotNull()
        todo = (
            current.select(*columns)
            .join(existed, "path", "left")
            .filter(~held | (F.col("stamp") != F.col("_stamp_before")))
            .observe(counted, F.count(F.lit(1)).alias("todo"), F.count_if(held).alias("held"))
            .select(*columns, *(held.alias(flag) for flag in HELD))
            .persist(StorageLevel.DISK_ONLY)
        )
        frames.append(todo)
        todo.count()
        todo_count, held_before = int(counted.get["todo"]), int(counted.get["held"])
        gone = existed.select("path").join(current.select("path"), "path", "left_anti").persist(StorageLevel.DISK_ONLY)
        frames.append(gone)
        removed = gone.count()
        touched = todo.select("path").unionByName(gone).persist(StorageLevel.DISK_ONLY)
        frames.append(touched)
        touched.count()  # cached now, its size known: joins on it broadcast it when it is small (the usual day)
        before_rows = (
            labeled().select("path", "label", "split", "content_hash").join(touched, "path", "left_semi")
            if held_before + removed
            else _empty(spark, "path string, label string, split string, content_hash string")
        ).persist(StorageLevel.DISK_ONLY)
        frames.append(before_rows)
        chunks = chunk_ranges(todo, todo_count, chunk_files)
    except BaseException:
        for frame in frames:
            frame.unpersist()
        raise
    ranked.unpersist()
    return IngestPlan(
        todo=todo,
        gone=gone,
        touched=touched,
        before=before_rows,
        todo_count=todo_count,
        listed=listed_rows,
        kept=listed_rows - todo_count,
        removed=removed,
        chunks=chunks,
        duplicated=0,
    )


def chunk_ranges(todo: DataFrame, count: int, chunk_files: int) -> list[Chunk]:
    """About `count / chunk_files` contiguous path ranges of similar size, from a sample of the paths."""
    chunks = max(1, math.ceil(count / chunk_files))
    if chunks == 1:
        return [Chunk(None, None)]
    fraction = min(1.0, SAMPLE_PER_CHUNK * chunks / count)
    sample = sorted(r["path"] for r in todo.select("path").sample(fraction=fraction, seed=0).collect())
    bounds = sorted({sample[len(sample) * i // chunks] for i in range(1, chunks)}) if sample else []
    edges: list[str | None] = [None, *bounds, None]
    return [Chunk(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


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
