"""A class-data sharing archive (AppCDS) of the local Spark driver's classes, built once by `make setup`.

Each run starts a fresh driver JVM, which reads, parses and verifies thousands of
Spark, Hadoop, Parquet, Arrow and MLlib classes from their jars before and during
its first jobs. Mapped from an archive of a run's classes, they load already
parsed (measured on 2 cores: session start 5.1 → 2.8 s, first job 2.4 → 1.1 s).

The archive belongs to this JVM build and to pyspark's jars. The JVM checks both
when it maps the archive and, if either changed, starts without it: slower, with
the same results. `make setup` rebuilds it.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

ARCHIVE = Path(sys.prefix) / "share" / "fruits_assets" / "spark-driver.jsa"
# Spark's JVM options for administrators' defaults; users' own go in spark.driver.extraJavaOptions.
JAVA_OPTIONS = "spark.driver.defaultJavaOptions"
TRAINING_LABELS = ("Apple Red 1", "Banana 1")


def driver_java_options(archive: Path = ARCHIVE) -> dict[str, str]:
    """Spark settings that map `archive` into the driver JVM, when it has been built."""
    return {JAVA_OPTIONS: f"-XX:SharedArchiveFile={archive}"} if archive.is_file() else {}


def _write_training_images(root: Path) -> None:
    """A few 100x100 JPEGs in the Fruits-360 layout, and a file that is not an image (a rejection)."""
    from PIL import Image

    for shade, label in enumerate(TRAINING_LABELS):
        folder = root / "Training" / label
        folder.mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (100, 100), (200 - 60 * shade, 40 * i, 30)).save(folder / f"{i}.jpg")
    (root / "Training" / TRAINING_LABELS[0] / "broken.jpg").write_bytes(b"not a jpeg")


def _session(config: dict[str, str]) -> SparkSession:
    from fruits_assets.resources.spark import PySparkSession

    return PySparkSession(spark_config=config).spark_session


def _run_graph_then_dump(archive: Path, work: Path) -> None:
    """Materialize every asset on the training images in a driver JVM that writes `archive` as it exits."""
    from pyspark import SparkContext

    from fruits_assets.definitions import build_defs
    from fruits_assets.resources.spark import local_spark_config

    images, storage = work / "images", work / "storage"
    _write_training_images(images)
    spark = _session(local_spark_config() | {JAVA_OPTIONS: f"-XX:ArchiveClassesAtExit={archive} -Xlog:cds=off"})
    jvm = SparkContext._gateway.proc
    try:  # the graph's resource gets the session started above
        result = build_defs(str(images), str(storage)).resolve_implicit_global_asset_job_def().execute_in_process()
        if not result.success:
            raise RuntimeError("the training run failed")
    finally:
        spark.stop()
        jvm.stdin.close()  # the gateway exits when its stdin closes; the JVM writes the archive as it exits
        jvm.wait()


def start_with(archive: Path) -> None:
    """Start a local session that must map `archive` (`-Xshare:on` makes the JVM fail otherwise)."""
    from fruits_assets.resources.spark import local_spark_config

    crash_report = Path(tempfile.gettempdir()) / "fruits-jvm-archive-check-%p.log"  # not in the working directory
    options = f"-XX:SharedArchiveFile={archive} -Xshare:on -XX:ErrorFile={crash_report}"
    spark = _session(local_spark_config("local[1]") | {JAVA_OPTIONS: options})
    spark.range(1).count()
    spark.stop()


def in_fresh_process(target: Callable[..., None], *args: object) -> int:
    """Run `target` in a new interpreter: each needs its own driver JVM, started and ended with it."""
    process = multiprocessing.get_context("spawn").Process(target=target, args=args)
    process.start()
    process.join()
    return process.exitcode


def build(archive: Path = ARCHIVE) -> bool:
    """Write `archive` from a run of the whole graph, then check a driver maps it; True when it does.

    The archive is written beside its final name and renamed only once checked: a
    truncated archive crashes the JVM that maps it.
    """
    archive.parent.mkdir(parents=True, exist_ok=True)
    candidate = archive.with_name(f".{archive.name}.{os.getpid()}")
    try:
        with tempfile.TemporaryDirectory() as work:
            if in_fresh_process(_run_graph_then_dump, candidate, Path(work)) != 0 or not candidate.is_file():
                return False
        if in_fresh_process(start_with, candidate) != 0:
            return False
        candidate.replace(archive)
        return True
    finally:
        candidate.unlink(missing_ok=True)


if __name__ == "__main__":
    if build():
        print(f"Spark driver class archive ready: {ARCHIVE} ({ARCHIVE.stat().st_size / 1e6:.0f} MB)")
    else:
        ARCHIVE.unlink(missing_ok=True)
        print("note: no Spark driver class archive (see above): runs start their JVM slower, same results")
