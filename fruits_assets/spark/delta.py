"""Delta Lake tables: every write one atomic commit, changes merged by key, old versions readable by number.

A table's commit is the write of one JSON file in its `_delta_log`: on a file system
and on S3 alike, a reader sees the version before it or the version after it, never
half of one. Change data feed is on, so what a version added and removed can be
read back without scanning the table. Tables are clustered by path (Delta's liquid
clustering) and compacted every `MAINTAIN_EVERY` versions, when files no version
within the retention uses are vacuumed too: rows of one folder sit together, so a
merge that touches a few folders rewrites a few files. What a commit did comes back
from the log (delta-rs, `vision/delta_log.py`): its version, rows, operation metrics.

Deletion vectors would let a merge that updates or deletes scattered rows mark
them instead of rewriting their files, but Delta 4.0's MERGE and DELETE fail on a
table with deletion vectors and a column named `path` (delta-io/delta#5296), and
delta-rs reads no table with deletion vectors: they stay off.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from fruits_assets.spark.config import LISTING_THRESHOLD
from fruits_assets.spark.worker_files import WorkerFiles
from fruits_assets.vision.delta_log import TableState, table_state, version_files

RETENTION_HOURS = 168  # previous versions stay readable (time travel) for a week, then their files go
MAINTAIN_EVERY = 10  # versions: compaction and vacuum list the table's files, not worth doing at every commit
PROPERTIES = {
    "delta.enableChangeDataFeed": "true",
    "delta.deletedFileRetentionDuration": f"interval {RETENTION_HOURS} hours",
    "delta.logRetentionDuration": "interval 30 days",
}
CLUSTER_BY = "path"
_GLOB = set("{}[]*?\\")
_DELETE = "_delete"


@dataclass(frozen=True)
class Changes:
    """Rows to insert or update (`upserts`) and keys to delete (`deletes`, a `path` column), merged by path."""

    upserts: DataFrame
    deletes: DataFrame


@dataclass(frozen=True)
class Commit:
    """What a write left: the table's state after it, whether this write made a version, and what it wrote."""

    state: TableState
    committed: bool
    metrics: dict[str, int]


def write_metrics(state: TableState) -> dict[str, int]:
    """Rows and bytes a commit wrote and removed, from Delta's operation metrics (a merge's or a write's)."""
    m = state.operation_metrics
    return {
        "inserted": m.get("numTargetRowsInserted", m.get("numOutputRows", 0)),
        "updated": m.get("numTargetRowsUpdated", 0),
        "deleted": m.get("numTargetRowsDeleted", 0),
        "data_files_added": m.get("numTargetFilesAdded", m.get("numFiles", 0)),
        "data_files_removed": m.get("numTargetFilesRemoved", m.get("numRemovedFiles", 0)),
        "bytes_added": m.get("numTargetBytesAdded", m.get("numOutputBytes", 0)),
        "bytes_removed": m.get("numTargetBytesRemoved", m.get("numRemovedBytes", 0)),
    }


NOTHING_WRITTEN = dict.fromkeys(
    ("inserted", "updated", "deleted", "data_files_added", "data_files_removed", "bytes_added", "bytes_removed"), 0
)


def exists(spark: SparkSession, path: str) -> bool:
    return bool(DeltaTable.isDeltaTable(spark, path))


def read(
    spark: SparkSession, path: str, version: int | None = None, options: Mapping[str, str] | None = None
) -> DataFrame | None:
    """The table at `path` (at `version`, or its latest when called); None if there is no table there yet.

    A version of up to the session's `LISTING_THRESHOLD` files is read as the Parquet
    files its log lists (delta-rs, `options` its storage options), with the table's
    schema: the same rows as Delta's reader, without the two Spark jobs Delta runs to
    rebuild each new version's state, which cost more than reading a small table (0.5 s
    against 0.15 s on 2 cores). Past that many files (32, more for data on a file
    system: `file_system_config`) Spark would list them in a job of its own, and
    Delta's reader, which takes their sizes from the log, reads the version; so it does
    when the files alone do not hold the rows (`VersionFiles`).
    """
    listed = version_files(path, version, options)
    if listed is None:
        return None
    if listed.files is None or len(listed.files) > int(spark.conf.get(LISTING_THRESHOLD)):
        return _deltas_reader(spark, path, listed.version)
    schema = StructType.fromJson(json.loads(listed.schema_json))
    if not listed.files:
        return spark.createDataFrame([], schema)
    root = _literal(path.rstrip("/"))
    return spark.read.schema(schema).parquet(*(f"{root}/{_literal(file)}" for file in listed.files))


def for_workers(
    spark: SparkSession, path: str, version: int, options: Mapping[str, str] | None = None
) -> DataFrame | WorkerFiles | None:
    """The table at `version` for a Python transform (`worker_files.map_in_arrow`): its data files, which the
    workers read themselves, when the files alone hold its rows; else its rows as Delta's reader reads them.
    None if there is no table."""
    listed = version_files(path, version, options)
    if listed is None:
        return None
    if listed.files is None:
        return _deltas_reader(spark, path, listed.version)
    root = path.rstrip("/")
    return WorkerFiles(spark, [f"{root}/{file}" for file in listed.files], listed.sizes or [])


def _deltas_reader(spark: SparkSession, path: str, version: int) -> DataFrame:
    """The version's rows as Delta's own reader gives them (deletion vectors, column mapping, partitions applied)."""
    return spark.read.format("delta").option("versionAsOf", version).load(path)


def _literal(path: str) -> str:
    """`path` with Hadoop's glob characters escaped: Spark expands globs in the paths it is given to read."""
    return "".join("\\" + ch if ch in _GLOB else ch for ch in path)


@contextmanager
def _tagged(spark: SparkSession, made_from: Mapping | None) -> Iterator[str]:
    """Tag the commit made inside the block (user metadata): an id to know it by, and what it was made from."""
    tag = uuid.uuid4().hex
    key = "spark.databricks.delta.commitInfo.userMetadata"
    spark.conf.set(key, json.dumps({"write": tag, **({"made_from": made_from} if made_from is not None else {})}))
    try:
        yield tag
    finally:
        spark.conf.unset(key)


def _after(path: str, options: Mapping[str, str], tag: str) -> Commit:
    state = table_state(path, options)
    if state is None:
        raise FileNotFoundError(f"no Delta table at {path} after writing it")
    committed = state.user_metadata.get("write") == tag
    return Commit(state, committed, write_metrics(state) if committed else dict(NOTHING_WRITTEN))


def _create_as(spark: SparkSession, path: str, rows: DataFrame) -> None:
    """The table made from `rows` in one commit (its version 0), clustered by path, with the project's
    properties."""
    view = f"fruits_rows_{uuid.uuid4().hex}"
    # Dropping a view uncaches every cached plan that is the view's, a trivial projection of it included: the
    # view is a filter over `rows`, so rows the caller persisted for after the write stay cached (the optimizer
    # removes the filter).
    rows.filter(F.lit(True)).createOrReplaceTempView(view)
    properties = ", ".join(f"'{name}' = '{value}'" for name, value in PROPERTIES.items())
    try:
        spark.sql(
            f"CREATE TABLE delta.`{path}` USING delta CLUSTER BY ({CLUSTER_BY}) "
            f"TBLPROPERTIES ({properties}) AS SELECT * FROM {view}"
        )
    finally:
        spark.catalog.dropTempView(view)


def overwrite(
    spark: SparkSession, path: str, rows: DataFrame, made_from: Mapping | None, options: Mapping[str, str]
) -> Commit:
    """Replace the table's rows (and schema) with `rows` in one commit; create the table if needed."""
    with _tagged(spark, made_from) as tag:
        if not exists(spark, path):
            _create_as(spark, path, rows)
        else:
            rows.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(path)
    return _after(path, options, tag)


def append(spark: SparkSession, path: str, rows: DataFrame, options: Mapping[str, str]) -> Commit:
    """Add `rows`, none of whose keys the table holds (the caller knows), in one commit: no join with the table."""
    with _tagged(spark, None) as tag:
        if not exists(spark, path):
            _create_as(spark, path, rows)
        else:
            rows.write.format("delta").mode("append").save(path)
    return _after(path, options, tag)


def merge(
    spark: SparkSession,
    path: str,
    changes: Changes,
    options: Mapping[str, str],
    made_from: Mapping | None = None,
    key: str = "path",
) -> Commit:
    """Upsert `changes.upserts` and delete the keys of `changes.deletes` (those not upserted), in one commit.

    Nothing to change makes no commit (Delta skips it). A table that does not exist
    yet is made from the upserts.
    """
    upserts = changes.upserts
    if not exists(spark, path):
        with _tagged(spark, made_from) as tag:
            _create_as(spark, path, upserts)
        return _after(path, options, tag)
    columns = upserts.columns
    deletes = changes.deletes.select(key).withColumn(_DELETE, F.lit(True))
    # A key both upserted and deleted is upserted: its delete row is dropped, so no key matches twice.
    source = upserts.withColumn(_DELETE, F.lit(False)).unionByName(
        deletes.join(upserts.select(key), key, "left_anti"), allowMissingColumns=True
    )
    with _tagged(spark, made_from) as tag:
        (
            DeltaTable.forPath(spark, path)
            .alias("t")
            .merge(source.alias("s"), f"t.`{key}` = s.`{key}`")
            .whenMatchedDelete(condition=f"s.{_DELETE}")
            .whenMatchedUpdate(condition=f"NOT s.{_DELETE}", set={c: f"s.`{c}`" for c in columns})
            .whenNotMatchedInsert(condition=f"NOT s.{_DELETE}", values={c: f"s.`{c}`" for c in columns})
            .execute()
        )
    return _after(path, options, tag)


def changes(spark: SparkSession, path: str, after_version: int, up_to_version: int) -> DataFrame:
    """The rows versions `after_version`+1 … `up_to_version` added and removed, with `_change_type`."""
    reader = spark.read.format("delta").option("readChangeFeed", "true")
    return reader.option("startingVersion", after_version + 1).option("endingVersion", up_to_version).load(path)


def maintain(spark: SparkSession, path: str, version: int) -> None:
    """Every `MAINTAIN_EVERY` versions: cluster and compact new files (OPTIMIZE), then vacuum what no version
    within the retention needs. OPTIMIZE changes no data (its commit is not a change in the change feed)."""
    if version > 0 and version % MAINTAIN_EVERY == 0:
        table = DeltaTable.forPath(spark, path)
        if "clustering" in set(spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()["tableFeatures"] or []):
            table.optimize().executeCompaction()
        table.vacuum(RETENTION_HOURS)
