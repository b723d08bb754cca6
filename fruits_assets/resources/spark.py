"""The one PySpark resource every Spark asset, check and IO manager goes through."""

import os
import re
import sys
from pathlib import Path

from dagster_pyspark import LazyPySparkResource
from pyspark.find_spark_home import _find_spark_home

from fruits_assets.resources.jvm_archive import driver_java_options
from fruits_assets.resources.locations import uses_s3

DEFAULT_ARROW_BATCH = 512
# Every op that runs Spark requires it: a no-op locally, dagster-aws's EMR step launcher on EMR.
STEP_LAUNCHER = "pyspark_step_launcher"


def hadoop_version() -> str:
    """The Hadoop version pyspark ships (its `hadoop-client-api` jar), which `hadoop-aws` must match."""
    jars = Path(_find_spark_home()) / "jars"
    [version] = [m.group(1) for j in jars.iterdir() if (m := re.fullmatch(r"hadoop-client-api-(.+)\.jar", j.name))]
    return version


def s3a_config(endpoint: str | None = None, kms_key: str | None = None) -> dict[str, str]:
    """Hadoop's S3A connector for `s3://` and `s3a://` paths, with server-side encryption.

    The `hadoop-aws` jar matching pyspark's Hadoop (and its AWS SDK) comes from
    Maven Central once and is cached by Ivy; `make setup` fetches it. Credentials
    come from the AWS SDK's default chain only. `endpoint` (from `AWS_ENDPOINT_URL`)
    points S3A at an S3-compatible store, with path-style addressing.
    Objects are written with SSE-S3, or SSE-KMS with `kms_key`.
    """
    config = {
        "spark.jars.packages": f"org.apache.hadoop:hadoop-aws:{hadoop_version()}",
        "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3a.encryption.algorithm": "SSE-KMS" if kms_key else "AES256",  # AES256 is SSE-S3
    }
    if kms_key:
        config["spark.hadoop.fs.s3a.encryption.key"] = kms_key
    if endpoint:
        config |= {
            "spark.hadoop.fs.s3a.endpoint": endpoint,
            "spark.hadoop.fs.s3a.path.style.access": "true",
            "spark.hadoop.fs.s3a.endpoint.region": os.environ.get("AWS_REGION", "us-east-1"),
        }
    return config


def _app_config() -> dict[str, str]:
    """Settings of every deployment: Python workers on this interpreter, Arrow, UTC."""
    return {
        "spark.app.name": "fruits_assets",
        "spark.pyspark.python": os.environ.get("PYSPARK_PYTHON", sys.executable),
        "spark.pyspark.driver.python": sys.executable,
        "spark.python.worker.reuse": "true",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(DEFAULT_ARROW_BATCH),
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.showConsoleProgress": "false",
    }


def local_spark_config(master: str = "local[*]", driver_memory: str = "1g") -> dict[str, str]:
    """A local session bound to loopback, its driver's classes mapped from `make setup`'s archive.

    Every stage streams partition by partition, so a small heap suffices; a large
    one only lets the JVM grow with the data set before it collects (measured:
    peak RSS 2.7 GB for 1,714 images and 5.4 GB for 6,821 with 4 GB, 2.2 and 2.5 GB with 1 GB).
    """
    return (
        _app_config()
        | driver_java_options()
        | {
            "spark.master": master,
            "spark.driver.memory": driver_memory,
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            # Opening a local file costs far less than the 4 MB Spark assumes for object stores:
            # without this, a folder of small images is split into many tiny tasks.
            "spark.sql.files.openCostInBytes": str(512 * 1024),
        }
    )


def cluster_spark_config(master: str) -> dict[str, str]:
    """A driver here, executors on the cluster at `master` (`spark://…`, `k8s://…`, `yarn`).

    The driver advertises `SPARK_LOCAL_IP` when it is set, so executors can reach it;
    everything else (executor sizes, event logs) comes from `spark-defaults.conf` as usual.
    """
    config = _app_config() | driver_java_options() | {"spark.master": master}
    if local_ip := os.environ.get("SPARK_LOCAL_IP"):
        config |= {"spark.driver.host": local_ip, "spark.driver.bindAddress": local_ip}
    return config


class PySparkSession(LazyPySparkResource):
    """Dagster's lazy PySpark resource, with Python workers on `spark.pyspark.python`.

    PySpark starts its workers with `PYSPARK_PYTHON`, read when the session is
    created, not with the Spark setting: both are set, so workers import this
    project's packages whichever way the session was launched.
    """

    def _init_session(self) -> None:
        python = self.spark_config.get("spark.pyspark.python")
        if python and self._spark_session is None:
            os.environ["PYSPARK_PYTHON"] = python
        super()._init_session()


def emr_spark_config() -> dict[str, str]:
    """Inside a step on EMR: YARN, executors and `s3://` come from spark-submit and the cluster's defaults."""
    return _app_config()


def pyspark_session(config: dict[str, str], *locations: str) -> PySparkSession:
    """The PySpark resource for `config`, with S3A when a location is on S3."""
    if uses_s3(*locations):
        config = config | s3a_config(os.environ.get("AWS_ENDPOINT_URL"), os.environ.get("FRUITS_KMS_KEY_ID"))
    return PySparkSession(spark_config=config)


def fetch_s3a_jars() -> None:
    """Resolve `hadoop-aws` and its AWS SDK into Ivy's cache now (`make setup`), not on the first S3 run."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    for key, value in (local_spark_config("local[1]") | s3a_config()).items():
        builder = builder.config(key, value)
    builder.getOrCreate().stop()


if __name__ == "__main__":
    fetch_s3a_jars()
