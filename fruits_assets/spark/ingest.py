"""New and changed files through one pandas UDF: read, hash, decode and screen, then the model.

One engine per Python worker, built from a broadcast: Spark reuses workers across
tasks, so the model is built once per worker, not per task; and, named by the digest
of what was broadcast, across the runs a warm driver serves (`warm_driver.py`). Accumulators carry the
workers' timers back to the driver, so a run reports its stages and throughput.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark import Accumulator, AccumulatorParam, Broadcast, SparkContext, TaskContext
from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, FloatType, StringType, StructField, StructType

from fruits_assets.vision.engines import FeatureEngine, build_engine, check_engine, engine_payload
from fruits_assets.vision.ingest import IngestTimings, ingest

FEATURES_TYPE = ArrayType(FloatType(), containsNull=False)
OUTCOME = StructType(
    [
        StructField("content_hash", StringType()),
        StructField("reason", StringType()),
        StructField("message", StringType()),
        StructField("features", FEATURES_TYPE),
    ]
)

# Per Python worker: the engine built from the current broadcast.
_WORKER_ENGINE: dict[str, FeatureEngine] = {}


def worker_threads() -> int:
    """The cores Spark gives this task (`spark.task.cpus`), so workers never oversubscribe."""
    context = TaskContext.get()
    return max(1, context.cpus()) if context is not None else 1


def worker_engine(token: str, payload: Broadcast, engine: str) -> FeatureEngine:
    """This worker's engine for the broadcast named by `token`, built on first use."""
    if token not in _WORKER_ENGINE:
        _WORKER_ENGINE.clear()
        _WORKER_ENGINE[token] = build_engine(engine, payload.value, worker_threads())
    return _WORKER_ENGINE[token]


@contextmanager
def destroyed(broadcast: Broadcast) -> Iterator[None]:
    """`broadcast` destroyed when the block ends, however it ends."""
    try:
        yield
    finally:
        broadcast.destroy()


def payload_digest(payload) -> str:
    """What names an engine's payload (the LiteRT model's bytes, or the Keras weights): the same model, the same
    digest, so a worker keeps the engine it built."""
    digest = hashlib.sha256()
    for part in payload if isinstance(payload, list) else [payload]:
        digest.update(part if isinstance(part, bytes) else np.ascontiguousarray(part).tobytes())
    return digest.hexdigest()[:16]


class _Earliest(AccumulatorParam):
    def zero(self, value: float) -> float:
        return float("inf")

    def addInPlace(self, a: float, b: float) -> float:
        return min(a, b)


class _Latest(AccumulatorParam):
    def zero(self, value: float) -> float:
        return float("-inf")

    def addInPlace(self, a: float, b: float) -> float:
        return max(a, b)


@dataclass(frozen=True)
class IngestCounters:
    """Spark accumulators summing the workers' `IngestTimings` (read on the driver after an action).

    `started` and `finished` are the earliest task start (engine build included)
    and the latest batch end, by the workers' clocks: the stage's span.
    """

    files: Accumulator
    images: Accumulator
    read_seconds: Accumulator
    decode_seconds: Accumulator
    model_seconds: Accumulator
    read_retries: Accumulator
    read_failures: Accumulator
    started: Accumulator
    finished: Accumulator

    @classmethod
    def of(cls, sc: SparkContext) -> IngestCounters:
        return cls(
            sc.accumulator(0),
            sc.accumulator(0),
            sc.accumulator(0.0),
            sc.accumulator(0.0),
            sc.accumulator(0.0),
            sc.accumulator(0),
            sc.accumulator(0),
            sc.accumulator(float("inf"), _Earliest()),
            sc.accumulator(float("-inf"), _Latest()),
        )

    def add(self, timings: IngestTimings) -> None:
        self.files.add(timings.files)
        self.images.add(timings.images)
        self.read_seconds.add(timings.read_seconds)
        self.decode_seconds.add(timings.decode_seconds)
        self.model_seconds.add(timings.model_seconds)
        self.read_retries.add(timings.read_retries)
        self.read_failures.add(timings.read_failures)
        self.finished.add(time.time())

    def values(self) -> dict[str, float]:
        files = self.files.value
        return {
            "files": files,
            "images": self.images.value,
            "read_seconds": self.read_seconds.value,
            "decode_seconds": self.decode_seconds.value,
            "model_seconds": self.model_seconds.value,
            "read_retries": self.read_retries.value,
            "reads_failed": self.read_failures.value,
            "stage_seconds": self.finished.value - self.started.value if files else 0.0,
        }


def ingest_column(
    spark: SparkSession, engine: str, batch_size: int, max_pixels: int
) -> tuple[Callable[..., Column], IngestCounters, Broadcast]:
    """A pandas UDF `(path, label, listing_error) -> struct<content_hash, reason, message, features>`, its
    counters, and the broadcast it builds its engine from (for the caller to destroy once done with the UDF).

    The driver reads the engine's payload once and broadcasts it; workers build
    the engine from the broadcast and never read weights elsewhere.
    """
    sc = spark.sparkContext
    model_bytes = engine_payload(check_engine(engine))
    payload = sc.broadcast(model_bytes)
    token = f"{engine}-{payload_digest(model_bytes)}"
    counters = IngestCounters.of(sc)

    def outcomes(batches: Iterator[tuple[pd.Series, pd.Series, pd.Series]]) -> Iterator[pd.DataFrame]:
        counters.started.add(time.time())
        model = worker_engine(token, payload, engine)
        for paths, labels, errors in batches:
            timings = IngestTimings()
            done = ingest(
                model,
                paths.tolist(),
                [None if pd.isna(label) else label for label in labels],
                [None if pd.isna(error) else error for error in errors],
                batch_size,
                max_pixels,
                timings,
            )
            counters.add(timings)
            yield pd.DataFrame(
                {
                    "content_hash": [o.content_hash for o in done],
                    "reason": [None if o.reason is None else o.reason.value for o in done],
                    "message": [o.message for o in done],
                    "features": [None if o.features is None else o.features for o in done],
                }
            )

    return F.pandas_udf(outcomes, OUTCOME), counters, payload
