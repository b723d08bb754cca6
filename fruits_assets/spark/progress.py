"""What a long Spark action is doing: readable job descriptions and periodic progress lines; and small jobs run
side by side."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import TypeVar

from pyspark import inheritable_thread_target
from pyspark.sql import SparkSession

T = TypeVar("T")

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


def side_by_side(spark: SparkSession, calls: list[Callable[[], T]]) -> list[T]:
    """The calls' results, in order, each call run in a thread of its own that carries this thread's job
    description. An iterative fit runs hundreds of tiny jobs and leaves the cores idle between them: another
    fit's jobs fill them. Each call's results are what it gives alone (its jobs and their partitions are its own).

    If one fails, or the run is interrupted while they wait, the others' running jobs are
    cancelled (a fit then fails at once) rather than computing on for a step that has ended.
    """
    tag = f"side-by-side-{uuid.uuid4().hex}"

    def tagged(call: Callable[[], T]) -> Callable[[], T]:
        def run() -> T:
            spark.sparkContext.addJobTag(tag)
            try:
                return call()
            finally:
                spark.sparkContext.removeJobTag(tag)

        return inheritable_thread_target(spark)(run)

    pool = ThreadPoolExecutor(max_workers=max(len(calls), 1))
    try:
        futures = [pool.submit(tagged(call)) for call in calls]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)  # a failure ends the wait, whichever call it is
        for future in done:
            future.result()  # raises the failure, if that is why the wait ended
        return [future.result() for future in futures]
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        spark.sparkContext.cancelJobsWithTag(tag)
        raise
    finally:
        pool.shutdown(wait=True)
