"""The one PySpark resource every Spark asset, check and IO manager goes through, and the step launcher's key."""

import os

from dagster_pyspark import LazyPySparkResource

PYSPARK = "pyspark"
# Every op that runs Spark requires it: none locally, dagster-aws's EMR step launcher on EMR.
STEP_LAUNCHER = "pyspark_step_launcher"


class SparkResource(LazyPySparkResource):
    """Dagster's lazy PySpark resource: the session starts with the first step that uses it.

    PySpark starts its Python workers with `PYSPARK_PYTHON`, read when the session
    is created, not with the Spark setting: both are set, so workers import this
    project's packages whichever way the session was launched.
    """

    def _init_session(self) -> None:
        python = self.spark_config.get("spark.pyspark.python")
        if python and self._spark_session is None:
            os.environ["PYSPARK_PYTHON"] = python
        super()._init_session()
