"""MobileNetV2 features in a pandas UDF: one engine per Python worker, built from a broadcast."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pandas as pd
from pyspark import Accumulator, AccumulatorParam, Broadcast, SparkContext, TaskContext
from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, FloatType

from fruits_assets.vision.engines import FeatureEngine, build_engine, check_engine, engine_payload
from fruits_assets.vision.features import FeaturizeTimings, featurize_images

FEATURES_TYPE = ArrayType(FloatType(), containsNull=False)

# Per Python worker: the engine built from the current broadcast. Spark reuses
# workers across tasks, so the model is built once per worker, not per task.
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
class FeaturizeCounters:
    """Spark accumulators summing the workers' `FeaturizeTimings` (read on the driver after an action).

    `started` and `finished` are the earliest task start (engine build included)
    and the latest batch end, by the workers' clocks: the featurization stage's span.
    """

    images: Accumulator
    decode_seconds: Accumulator
    model_seconds: Accumulator
    started: Accumulator
    finished: Accumulator

    @classmethod
    def of(cls, sc: SparkContext) -> FeaturizeCounters:
        return cls(
            sc.accumulator(0),
            sc.accumulator(0.0),
            sc.accumulator(0.0),
            sc.accumulator(float("inf"), _Earliest()),
            sc.accumulator(float("-inf"), _Latest()),
        )

    def add(self, timings: FeaturizeTimings) -> None:
        self.images.add(timings.images)
        self.decode_seconds.add(timings.decode_seconds)
        self.model_seconds.add(timings.model_seconds)
        self.finished.add(time.time())

    def values(self) -> dict[str, float]:
        images = self.images.value
        return {
            "images": images,
            "decode_seconds": self.decode_seconds.value,
            "model_seconds": self.model_seconds.value,
            "stage_seconds": self.finished.value - self.started.value if images else 0.0,
        }


def features_column(
    spark: SparkSession, engine: str, batch_size: int
) -> tuple[Callable[..., Column], FeaturizeCounters]:
    """A pandas UDF `(content, path) -> array<float>[1280]` for the given engine, and its counters.

    The driver prepares the engine's payload once and broadcasts it; workers
    build the engine from the broadcast and never read weights elsewhere.
    """
    sc = spark.sparkContext
    payload = sc.broadcast(engine_payload(check_engine(engine)))
    token = f"{engine}-{uuid.uuid4().hex}"
    counters = FeaturizeCounters.of(sc)

    def features(batches: Iterator[tuple[pd.Series, pd.Series]]) -> Iterator[pd.Series]:
        counters.started.add(time.time())
        model = worker_engine(token, payload, engine)
        for contents, paths in batches:
            timings = FeaturizeTimings()
            matrix = featurize_images(model, contents.to_numpy(), paths.to_numpy(), batch_size, timings)
            counters.add(timings)
            yield pd.Series(list(matrix))

    return F.pandas_udf(features, FEATURES_TYPE), counters
