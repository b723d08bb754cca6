"""The one PySpark resource every Spark asset, check and IO manager goes through, and the step launcher's key."""

import os

from dagster import get_dagster_logger
from dagster_pyspark import LazyPySparkResource
from pydantic import Field
from pyspark import SparkContext
from pyspark.sql import SparkSession

from fruits_assets.spark.config import with_native_trim
from fruits_assets.spark.warm_driver import WarmDriverUnavailable, answers, attached_session, let_go

PYSPARK = "pyspark"
# Every op that runs Spark requires it: none locally, dagster-aws's EMR step launcher on EMR.
STEP_LAUNCHER = "pyspark_step_launcher"
OWN_JVM = "Spark: a JVM of this run's own"


class SparkResource(LazyPySparkResource):
    """Dagster's lazy PySpark resource: the session starts with the first step that uses it.

    With `keep_warm_seconds`, the session is on a driver kept warm between runs
    (`spark/warm_driver.py`): the first run starts it, later runs attach to its JVM,
    which is gone after that many seconds without a run. A run that cannot have it
    (lent to another run, failed) starts its own JVM, as with 0, and says why. The
    run's process holds the driver until it exits: one that lives on (a test session)
    keeps it from other runs.

    PySpark starts its Python workers with `PYSPARK_PYTHON`, read when the session
    is created, not with the Spark setting: both are set, so workers import this
    project's packages whichever way the session was launched.
    """

    keep_warm_seconds: float = Field(
        default=0.0, description="Seconds a driver stays warm for the next run after one ends; 0: a JVM per run."
    )
    trim_native_heap: bool = Field(
        default=False,
        description="Have the driver JVM trim its native heap (where that JVM accepts it): for drivers this "
        "project starts, not where a cluster's administrators set the driver's default options (EMR).",
    )

    def _init_session(self) -> None:
        if self._spark_session is not None and answers(self._spark_session.sparkContext):
            return
        self._spark_session = None
        log = get_dagster_logger()
        context = SparkContext._active_spark_context  # this resource's, or another copy's (nested resources)
        if context is not None and not answers(context):
            # Its JVM died (killed for its memory, say): the step failed, and its retry needs another JVM.
            log.warning("Spark: the JVM this run used no longer answers; starting another")
            let_go()
        python = self.spark_config.get("spark.pyspark.python")
        if python:
            os.environ["PYSPARK_PYTHON"] = python
        if self.keep_warm_seconds > 0 and SparkContext._active_spark_context is None:
            try:
                attached = attached_session(self._session_config(), self.keep_warm_seconds)
            except WarmDriverUnavailable as why:
                log.info(f"{OWN_JVM} ({why})")
            else:
                self._spark_session = attached.session
                how = "started a warm driver" if attached.started else "attached to the warm driver"
                log.info(f"Spark: {how}, pid {attached.pid} (its log: {attached.log})")
                return
        elif SparkContext._active_spark_context is None:
            log.info(OWN_JVM)
        self._spark_session = SparkSession.builder.config(map=self._session_config()).getOrCreate()

    def _session_config(self) -> dict[str, str]:
        """The Spark settings (flat, `spark.…` keys) as the driver starts with them."""
        return with_native_trim(self.spark_config) if self.trim_native_heap else dict(self.spark_config)
