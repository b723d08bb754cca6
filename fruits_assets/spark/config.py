"""Spark settings of each deployment, as plain dictionaries: what a session is started with.

Nothing here reads the project's settings: the caller passes what they hold. (Which
JVM Spark starts is found as Spark finds it: `JAVA_HOME`, else `java` on the path.)
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from pyspark.find_spark_home import _find_spark_home

DEFAULT_ARROW_BATCH = 512
LOCAL_PARTITIONS = 4 * (os.cpu_count() or 1)
LOCAL_LISTING_PATHS = 1024
# Past this many paths, Spark lists the paths it is given in a job of its own (32 unless the session sets it).
LISTING_THRESHOLD = "spark.sql.sources.parallelPartitionDiscovery.threshold"
DELTA_PACKAGE = "io.delta:delta-spark_2.13:4.0.0"  # the Delta Lake of emr-spark-8.0.0 (4.0.0-amzn-1-spark)
# The jars `make setup` resolves from Maven Central, each set in an Ivy folder of its own beside pyspark:
# runs name the files (`spark.jars`), so no session resolves anything at start-up.
JARS = Path(sys.prefix) / "share" / "fruits_assets" / "jars"
# The driver's classes, archived by `make setup` (AppCDS) beside the pyspark jars they come from: each
# run starts a fresh driver JVM, and mapping parsed classes saves seconds (session start 5.1 → 2.8 s).
CLASS_ARCHIVE = Path(sys.prefix) / "share" / "fruits_assets" / "spark-driver.jsa"
# Spark's JVM options for administrators' defaults; users' own go in spark.driver.extraJavaOptions.
JAVA_OPTIONS = "spark.driver.defaultJavaOptions"


# glibc keeps in its arenas what the driver JVM's native code frees (codecs, Arrow, Netty): a warm driver that had
# served two runs peaked 0.15 GB lower on 40,000 images with the JVM trimming them every 2 s (JDK 17.0.9 and later).
NATIVE_TRIM = "-XX:TrimNativeHeapInterval=2000"


@functools.cache
def jvm_accepts(option: str) -> bool:
    """Whether the JVM Spark starts accepts `option` (one it does not know stops it from starting)."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if java is None:
        return False
    try:
        return subprocess.run([java, option, "-version"], capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.SubprocessError):  # none there, not executable, hung: Spark will say so itself
        return False


def with_native_trim(config: Mapping[str, str]) -> dict[str, str]:
    """`config` with the driver JVM trimming its native heap, where that JVM accepts it.

    Asked as a session starts, not when the settings are built: a run with no Spark work
    starts no JVM at all, not even `java -version`.
    """
    if not jvm_accepts(NATIVE_TRIM):
        return dict(config)
    return dict(config) | {JAVA_OPTIONS: " ".join(filter(None, [config.get(JAVA_OPTIONS, ""), NATIVE_TRIM]))}


def driver_java_options(archive: Path = CLASS_ARCHIVE) -> dict[str, str]:
    """Spark settings for the driver JVM: `archive` mapped, once it has been built.

    The archive belongs to this JVM build and to pyspark's jars; the JVM checks both
    when it maps it and, if either changed, starts without it: slower, same results.
    """
    return {JAVA_OPTIONS: f"-XX:SharedArchiveFile={archive}"} if archive.is_file() else {}


def hadoop_version() -> str:
    """The Hadoop version pyspark ships (its `hadoop-client-api` jar), which `hadoop-aws` must match."""
    jars = Path(_find_spark_home()) / "jars"
    [version] = [m.group(1) for j in jars.iterdir() if (m := re.fullmatch(r"hadoop-client-api-(.+)\.jar", j.name))]
    return version


def s3a_package() -> str:
    return f"org.apache.hadoop:hadoop-aws:{hadoop_version()}"


def packages() -> dict[str, str]:
    """Each set of jars `make setup` fetches, by name: Delta Lake, and S3A for `s3://` outside EMR."""
    return {"delta": DELTA_PACKAGE, "s3a": s3a_package()}


def jar_files(name: str, jars: Path = JARS) -> list[str]:
    """The jar files of the set `name`, as `make setup` resolved them; a clear error if it did not."""
    found = sorted(str(p) for p in (jars / name / "jars").glob("*.jar"))
    if not found:
        raise FileNotFoundError(f"no {name} jars in {jars / name}: run `make setup` (python -m fruits_assets.prepare)")
    return found


def delta_sql_config() -> dict[str, str]:
    """Delta Lake's SQL extension and catalog: what every deployment's session needs (its jars apart)."""
    return {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        # VACUUM would otherwise add two commits of its own: a table's versions are its materializations.
        "spark.databricks.delta.vacuum.logging.enabled": "false",
    }


def jars_config(*names: str) -> dict[str, str]:
    """The resolved files of the given sets (EMR brings its own Delta and EMRFS), for the driver and executors.

    `spark.jars` ships them to executors. The driver also has them on its JVM's own
    class path, where the class-data archive `make setup` writes can hold their
    classes too (classes a later loader adds cannot be archived): Delta's thousands
    of classes then load already parsed. The sets keep their order, so a session with
    S3A's jars after Delta's still maps the archive made with Delta's alone.
    """
    files = [f for name in names for f in jar_files(name)]
    return {"spark.jars": ",".join(files), "spark.driver.extraClassPath": os.pathsep.join(files)}


def s3a_config(endpoint: str | None, region: str, kms_key: str | None = None) -> dict[str, str]:
    """Hadoop's S3A connector for `s3://` and `s3a://` paths, with server-side encryption.

    The `hadoop-aws` jar matching pyspark's Hadoop and its AWS SDK come from the
    `s3a` jar set (`jars_config("s3a")`). Credentials come from the AWS SDK's
    default chain only. `endpoint` (`AWS_ENDPOINT_URL`) points S3A at an
    S3-compatible store, with path-style addressing. Objects are written with
    SSE-S3, or SSE-KMS with `kms_key`.
    """
    config = {
        "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3a.encryption.algorithm": "SSE-KMS" if kms_key else "AES256",  # AES256 is SSE-S3
    }
    if kms_key:
        config["spark.hadoop.fs.s3a.encryption.key"] = kms_key
    if endpoint:
        config |= {
            "spark.hadoop.fs.s3a.endpoint": endpoint,
            "spark.hadoop.fs.s3a.path.style.access": "true",
            "spark.hadoop.fs.s3a.endpoint.region": region,
        }
    return config


def app_config(worker_python: str, driver_python: str) -> dict[str, str]:
    """Settings of every deployment: Python workers on the given interpreter, Arrow, UTC."""
    return {
        "spark.app.name": "fruits_assets",
        "spark.pyspark.python": worker_python,
        "spark.pyspark.driver.python": driver_python,
        "spark.python.worker.reuse": "true",
        "spark.executorEnv.TF_CPP_MIN_LOG_LEVEL": "3",  # TensorFlow's C++ start-up lines, in every worker
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(DEFAULT_ARROW_BATCH),
        "spark.sql.session.timeZone": "UTC",
        # Every Parquet file written (the tables' too, made before or after): their values are floats (features,
        # components) and strings snappy already packs. Dictionaries saved 1-3% of the tables' bytes, and cost
        # 0.7 s of a 1.2 s write of 40,000 projected rows (119 doubles each).
        "spark.hadoop.parquet.enable.dictionary": "false",
        "spark.ui.showConsoleProgress": "false",
        **delta_sql_config(),
    }


def file_system_config() -> dict[str, str]:
    """Settings of data on a file system, not S3: up to `LOCAL_LISTING_PATHS` paths are listed on the driver.

    Spark lists more than 32 paths in a job of its own; a stat of a local file costs
    far less. A table's version of up to that many files is then read as its files,
    without Delta's jobs to rebuild its state (`delta.read`). On S3 each path is a
    request, and 32 stays.
    """
    return {LISTING_THRESHOLD: str(LOCAL_LISTING_PATHS)}


def local_config(master: str = "local[*]", driver_memory: str = "1g") -> dict[str, str]:
    """A local session bound to loopback, its driver's classes mapped from `make setup`'s archive.

    Every stage streams partition by partition, so a small heap suffices; a large
    one only lets the JVM grow with the data set before it collects (measured:
    peak RSS 2.7 GB for 1,714 images and 5.4 GB for 6,821 with 4 GB, 2.2 and 2.5 GB with 1 GB).
    """
    return driver_java_options() | {
        "spark.master": master,
        "spark.driver.memory": driver_memory,
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        # Opening a local file costs far less than the 4 MB Spark assumes for object stores:
        # without this, a folder of small images is split into many tiny tasks.
        "spark.sql.files.openCostInBytes": str(512 * 1024),
        # One machine's cores, not a cluster's: Spark's 200 shuffle partitions (and Delta's 50 for a table's
        # log) would each be a task of a few rows, most of a small run's time.
        "spark.sql.shuffle.partitions": str(LOCAL_PARTITIONS),
        "spark.databricks.delta.snapshotPartitions": str(LOCAL_PARTITIONS),
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": str(LOCAL_PARTITIONS),  # VACUUM's listing
    }


def cluster_config(master: str, driver_ip: str | None) -> dict[str, str]:
    """A driver here, executors on the cluster at `master` (`spark://…`, `k8s://…`, `yarn`).

    The driver advertises `driver_ip` (`SPARK_LOCAL_IP`) when given, so executors can
    reach it; everything else (executor sizes, event logs) comes from
    `spark-defaults.conf` as usual.
    """
    config = driver_java_options() | {"spark.master": master}
    if driver_ip:
        config |= {"spark.driver.host": driver_ip, "spark.driver.bindAddress": driver_ip}
    return config
