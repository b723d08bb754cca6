"""The feature matrix's count, sums and cross-products: all StandardScaler and PCA need, kept up to date.

The scaler's mean and standard deviation and PCA's covariance are exact functions of
n, Σx and Σxxᵀ. Kept with the identity of the table version they summarize (Delta's
table id and version), they are updated with the rows later versions added and
removed (the table's change data feed), so a refit after a 1% change reads 1% of the
rows. Sums are float64 over float32 features.

Each partition sums its rows with one matrix product in a Python worker, reading
the features straight from Arrow buffers; the partitions' sums are added on the
executors, `FAN_IN` at a time, down to at most `DRIVER_SUMS`, which the driver adds
(`summed_on_executors`): the driver holds a bounded number of 1280x1280 matrices
whatever the number of rows or partitions (Spark's `treeAggregate` collects the last
level's sums, about the square root of the partitions: 13 MB each), and a small
input (a day's change, a few partitions) pays no shuffle for a level of its own.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark import RDD
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fruits_assets.spark.worker_files import WorkerFiles, map_in_arrow
from fruits_assets.vision.mobilenet import FEATURE_DIM

ADDED = ("insert", "update_postimage")
REMOVED = ("delete", "update_preimage")
FAN_IN = 8  # partial sums a task adds up at each level
# Partial sums the driver adds itself (13 MB each for the features' moments): adding 2 to 4 of them on the
# executors first cost a shuffle of their bytes, 0.1 to 0.15 s of the 0.6 to 0.7 s the moments of 400 rows took.
DRIVER_SUMS = 4
T = TypeVar("T")


@dataclass(frozen=True)
class Moments:
    """n, Σx and Σxxᵀ of the feature rows of one table version (`table`: its id and version, when known)."""

    count: int
    sums: np.ndarray
    cross: np.ndarray
    table: dict | None = None

    @classmethod
    def zero(cls, dim: int = FEATURE_DIM) -> Moments:
        return cls(0, np.zeros(dim), np.zeros((dim, dim)))

    def __add__(self, other: Moments) -> Moments:
        return Moments(self.count + other.count, self.sums + other.sums, self.cross + other.cross)

    def of(self, table: dict) -> Moments:
        return Moments(self.count, self.sums, self.cross, dict(table))

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        table = self.table or {}
        np.savez(
            buffer,
            count=self.count,
            sums=self.sums,
            cross=self.cross,
            table_id=str(table.get("table_id", "")),
            version=int(table.get("version", -1)),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Moments:
        with np.load(io.BytesIO(data)) as saved:
            version = int(saved["version"]) if "version" in saved.files else -1
            table_id = str(saved["table_id"]) if "table_id" in saved.files else ""
            table = {"table_id": table_id, "version": version} if table_id and version >= 0 else None
            return cls(int(saved["count"]), saved["sums"], saved["cross"], table)


def matrix(column: pa.Array, dim: int = FEATURE_DIM) -> np.ndarray:
    """A column of `dim`-long float lists as an (n, dim) float64 matrix, read from the Arrow buffers."""
    lengths = pc.list_value_length(column)
    if len(column) and (column.null_count or pc.min(lengths).as_py() != dim or pc.max(lengths).as_py() != dim):
        raise ValueError(f"feature rows must hold {dim} values each")
    return pc.list_flatten(column).to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float64)


def moments_of(features: DataFrame | WorkerFiles, sign: str | None = None, dim: int = FEATURE_DIM) -> Moments:
    """The moments of the `features` column, each row counted +1 (or by the ±1 double column `sign`), in one
    Spark job."""

    def partial(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        count, sums, cross = 0, np.zeros(dim), np.zeros((dim, dim))
        for batch in batches:
            if batch.num_rows:
                x = matrix(batch.column("features"), dim)
                w = batch.column(sign).to_numpy() if sign else np.ones(batch.num_rows)
                count, sums, cross = count + int(w.sum()), sums + w @ x, cross + (x * w[:, None]).T @ x
        yield pa.RecordBatch.from_pydict({"moments": [Moments(count, sums, cross).to_bytes()]})

    columns = ["features", sign] if sign else ["features"]
    parts = map_in_arrow(features, columns, partial, "moments binary").rdd.map(lambda row: bytes(row["moments"]))
    total = summed_on_executors(parts, _add)
    return Moments.from_bytes(total) if total is not None else Moments.zero(dim)


def added_up(parts: RDD, add: Callable[[T, T], T]) -> RDD:
    """`parts` added with `add` on the executors, `FAN_IN` partitions' sums per task and level, down to at most
    `DRIVER_SUMS` partitions holding one sum each (None where a partition had nothing to add)."""

    def both(a: T | None, b: T | None) -> T | None:
        return a if b is None else b if a is None else add(a, b)

    level = parts.mapPartitions(lambda items: [functools.reduce(both, items, None)])
    while (count := level.getNumPartitions()) > DRIVER_SUMS:
        fewer = math.ceil(count / FAN_IN)
        keyed = level.mapPartitionsWithIndex(lambda index, items, groups=fewer: ((index % groups, x) for x in items))
        level = keyed.reduceByKey(both, fewer).values()
    return level


def summed_on_executors(parts: RDD, add: Callable[[T, T], T]) -> T | None:
    """The sum of `parts`, the driver receiving at most `DRIVER_SUMS` partial sums (None when there was nothing
    to add)."""
    found = [part for part in added_up(parts, add).collect() if part is not None]
    return functools.reduce(add, found) if found else None


def _add(a: bytes, b: bytes) -> bytes:
    """Two partial sums added, on an executor."""
    return (Moments.from_bytes(a) + Moments.from_bytes(b)).to_bytes()


def change_moments(changes: DataFrame, dim: int = FEATURE_DIM) -> Moments:
    """What a table's change data feed adds to the moments: added rows count +1, removed rows -1."""
    kinds = changes.filter(F.col("_change_type").isin(*ADDED, *REMOVED))
    signed = kinds.withColumn("sign", F.when(F.col("_change_type").isin(*ADDED), 1.0).otherwise(-1.0))
    return moments_of(signed, "sign", dim)
