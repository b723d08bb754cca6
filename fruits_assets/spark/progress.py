"""What a long Spark action is doing: readable job descriptions and periodic progress lines."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pyspark.sql import SparkSession

_OPEN = threading.local()  # the descriptions of the enclosing blocks, outermost first


@contextmanager
def job_description(spark: SparkSession, description: str) -> Iterator[None]:
    """Name the Spark jobs started inside the block, so the Spark UI says which asset runs them.

    Blocks nest: the IO manager's write inside the featurization reads
    `mobilenet_features: featurize N images (litert) › mobilenet_features: write Parquet`.
    """
    sc = spark.sparkContext
    previous = sc.getLocalProperty("spark.job.description")
    stack = getattr(_OPEN, "stack", [])
    _OPEN.stack = [*stack, description]
    sc.setJobDescription(" › ".join(_OPEN.stack))
    try:
        yield
    finally:
        _OPEN.stack = stack
        sc.setJobDescription(previous)


@contextmanager
def progress_lines(done: Callable[[], int], total: int, log: Callable[[str], None], every: float) -> Iterator[None]:
    """Log `done()` out of `total` images and the rate so far every `every` seconds until the block ends."""
    stop = threading.Event()
    began = time.perf_counter()

    def report() -> None:
        while not stop.wait(every):
            count, seconds = done(), time.perf_counter() - began
            share, rate = 100 * count / max(total, 1), count / seconds
            left = f", about {(total - count) / rate / 60:.1f} min left" if rate > 0 else ""
            log(f"read and featurized {count}/{total} files ({share:.0f}%), {rate:.1f} files/s{left}")

    reporter = threading.Thread(target=report, name="featurization-progress", daemon=True)
    reporter.start()
    try:
        yield
    finally:
        stop.set()
        reporter.join()
