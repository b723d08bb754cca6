"""The feature matrix's count, sums and cross-products: all StandardScaler and PCA need, kept up to date.

The scaler's mean and standard deviation and PCA's covariance are exact functions of
n, Σx and ΣxxᵀΣ: kept with the table version they summarize, they are updated with
the rows later versions added and removed (the table's change data feed), so a
refit after a 1% change reads 1% of the rows. Sums are float64 over float32 features.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType, StructField, StructType

from fruits_assets.vision.mobilenet import FEATURE_DIM

ADDED = ("insert", "update_postimage")
REMOVED = ("delete", "update_preimage")


@dataclass(frozen=True)
class Moments:
    """n, Σx and Σxxᵀ of the feature rows of one table version."""

    count: int
    sums: np.ndarray
    cross: np.ndarray
    version: int | None = None

    @classmethod
    def zero(cls, dim: int = FEATURE_DIM) -> Moments:
        return cls(0, np.zeros(dim), np.zeros((dim, dim)))

    def __add__(self, other: Moments) -> Moments:
        return Moments(self.count + other.count, self.sums + other.sums, self.cross + other.cross)

    def __sub__(self, other: Moments) -> Moments:
        return Moments(self.count - other.count, self.sums - other.sums, self.cross - other.cross)

    def at(self, version: int | None) -> Moments:
        return Moments(self.count, self.sums, self.cross, version)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(
            buffer,
            count=self.count,
            sums=self.sums,
            cross=self.cross,
            version=-1 if self.version is None else self.version,
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Moments:
        with np.load(io.BytesIO(data)) as saved:
            version = int(saved["version"])
            return cls(int(saved["count"]), saved["sums"], saved["cross"], None if version < 0 else version)


def moments_of(features: DataFrame, sign: str | None = None, dim: int = FEATURE_DIM) -> Moments:
    """The moments of the `features` column, each row counted +1 (or by the ±1 column `sign`), in one Spark job.

    Each partition sums its rows with one matrix product in a Python worker; the
    driver adds the partitions' sums.
    """
    signed = features.select("features", (F.col(sign) if sign else F.lit(1.0)).cast("double").alias("sign"))

    def partial(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        total = Moments.zero(dim)
        for batch in batches:
            if len(batch):
                x = np.stack(batch["features"].to_numpy()).astype(np.float64)
                w = batch["sign"].to_numpy()
                total = total + Moments(int(w.sum()), w @ x, (x * w[:, None]).T @ x)
        yield pd.DataFrame({"moments": [total.to_bytes()]})

    parts = signed.mapInPandas(partial, StructType([StructField("moments", BinaryType())])).collect()
    total = Moments.zero(dim)
    for row in parts:
        total = total + Moments.from_bytes(bytes(row["moments"]))
    return total


def change_moments(changes: DataFrame, dim: int = FEATURE_DIM) -> Moments:
    """What a table's change data feed adds to the moments: added rows count +1, removed rows -1."""
    kinds = changes.filter(F.col("_change_type").isin(*ADDED, *REMOVED))
    signed = kinds.withColumn("sign", F.when(F.col("_change_type").isin(*ADDED), 1.0).otherwise(-1.0))
    return moments_of(signed, "sign", dim)
