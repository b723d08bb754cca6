"""Delta Lake tables: every write one atomic commit, changes merged by key, old versions readable by number.

A table's commit is the write of one JSON file in its `_delta_log`: on a file system
and on S3 alike, a reader sees the version before it or the version after it, never
half of one. Change data feed is on, so what a version added and removed can be
read back without scanning the table. Files no version within the retention uses
are vacuumed after each write.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

RETENTION_HOURS = 168  # previous versions stay readable (time travel) for a week, then their files go
VACUUM_EVERY = 10  # versions: a vacuum lists the table's files, not worth doing at every commit
PROPERTIES = {
    "delta.enableChangeDataFeed": "true",
    "delta.deletedFileRetentionDuration": f"interval {RETENTION_HOURS} hours",
    "delta.logRetentionDuration": "interval 30 days",
}
_DELETE = "_delete"


@dataclass(frozen=True)
class Changes:
    """Rows to insert or update (`upserts`) and keys to delete (`deletes`, a `path` column), merged by path.

    `none` says the caller knows both are empty: the table is then not touched at all.
    """

    upserts: DataFrame
    deletes: DataFrame
    none: bool = False


@dataclass(frozen=True)
class Replacement:
    """Every row of a table, replaced; `made_from` names the sources, so the same sources are not written twice.

    `rows` is None when the caller knows the table was already made from these sources.
    """

    rows: DataFrame | None
    made_from: dict


@dataclass(frozen=True)
class Commit:
    """What a write did: the table version it made (None when there was nothing to write) and its counts."""

    version: int | None
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: bool = False


def exists(spark: SparkSession, path: str) -> bool:
    return bool(DeltaTable.isDeltaTable(spark, path))


def read(spark: SparkSession, path: str, version: int | None = None) -> DataFrame | None:
    """The table at `path` (at `version`, or its latest); None if there is no table there yet."""
    if not exists(spark, path):
        return None
    reader = spark.read.format("delta")
    return (reader.option("versionAsOf", version) if version is not None else reader).load(path)


def latest_version(spark: SparkSession, path: str) -> int | None:
    if not exists(spark, path):
        return None
    return int(DeltaTable.forPath(spark, path).history(1).select("version").first()[0])


def _commit_of(spark: SparkSession, path: str, tag: str) -> Commit:
    """What the write tagged `tag` committed; no commit (the version before) if Delta found nothing to change."""
    last = DeltaTable.forPath(spark, path).history(1).select("version", "operationMetrics", "userMetadata").first()
    if last["userMetadata"] is None or json.loads(last["userMetadata"]).get("write") != tag:
        return Commit(version=int(last["version"]), unchanged=True)
    metrics = {name: int(value or 0) for name, value in (last["operationMetrics"] or {}).items()}
    return Commit(
        version=int(last["version"]),
        inserted=metrics.get("numTargetRowsInserted", metrics.get("numOutputRows", 0)),
        updated=metrics.get("numTargetRowsUpdated", 0),
        deleted=metrics.get("numTargetRowsDeleted", 0),
    )


@contextmanager
def _tagged(spark: SparkSession, sources: dict | None) -> Iterator[str]:
    """Tag the commits made inside the block (user metadata): the sources, and an id to know the commit by."""
    tag = uuid.uuid4().hex
    key = "spark.databricks.delta.commitInfo.userMetadata"
    spark.conf.set(key, json.dumps({"write": tag, **({"made_from": sources} if sources is not None else {})}))
    try:
        yield tag
    finally:
        spark.conf.unset(key)


def rows(spark: SparkSession, path: str) -> int:
    """The table's row count, from its files' statistics (no data read)."""
    table = read(spark, path)
    return table.count() if table is not None else 0


def made_from(spark: SparkSession, path: str) -> dict | None:
    """The sources the latest version's rows were made from (its commit's user metadata), if recorded."""
    if not exists(spark, path):
        return None
    recorded = DeltaTable.forPath(spark, path).history(1).select("userMetadata").first()[0]
    return json.loads(recorded).get("made_from") if recorded else None


def overwrite(spark: SparkSession, path: str, rows: DataFrame, sources: dict | None = None) -> Commit:
    """Replace the table's rows (and schema) with `rows` in one commit; create the table if needed."""
    writer = rows.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
    for name, value in PROPERTIES.items():
        writer = writer.option(name, value)
    with _tagged(spark, sources) as tag:
        writer.save(path)
    return _commit_of(spark, path, tag)


def merge(spark: SparkSession, path: str, changes: Changes, key: str = "path") -> Commit:
    """Upsert `changes.upserts` and delete the keys of `changes.deletes` (those not upserted), in one commit.

    Nothing to change makes no commit (Delta skips it). A table that does not exist
    yet is created from the upserts.
    """
    upserts = changes.upserts
    if not exists(spark, path):
        return overwrite(spark, path, upserts)
    if changes.none:
        return Commit(version=latest_version(spark, path), unchanged=True)
    columns = upserts.columns
    deletes = changes.deletes.select(key).withColumn(_DELETE, F.lit(True))
    # A key both upserted and deleted is upserted: its delete row is dropped, so no key matches twice.
    source = upserts.withColumn(_DELETE, F.lit(False)).unionByName(
        deletes.join(upserts.select(key), key, "left_anti"), allowMissingColumns=True
    )
    with _tagged(spark, None) as tag:
        (
            DeltaTable.forPath(spark, path)
            .alias("t")
            .merge(source.alias("s"), f"t.`{key}` = s.`{key}`")
            .whenMatchedDelete(condition=f"s.{_DELETE}")
            .whenMatchedUpdate(condition=f"NOT s.{_DELETE}", set={c: f"s.`{c}`" for c in columns})
            .whenNotMatchedInsert(condition=f"NOT s.{_DELETE}", values={c: f"s.`{c}`" for c in columns})
            .execute()
        )
    return _commit_of(spark, path, tag)


def changes(spark: SparkSession, path: str, after_version: int, up_to_version: int) -> DataFrame:
    """The rows versions `after_version`+1 … `up_to_version` added and removed, with `_change_type`."""
    reader = spark.read.format("delta").option("readChangeFeed", "true")
    return reader.option("startingVersion", after_version + 1).option("endingVersion", up_to_version).load(path)


def vacuum(spark: SparkSession, path: str, version: int) -> None:
    """Every `VACUUM_EVERY` versions, delete the files no version within the retention needs."""
    if version > 0 and version % VACUUM_EVERY == 0:
        DeltaTable.forPath(spark, path).vacuum(RETENTION_HOURS)
