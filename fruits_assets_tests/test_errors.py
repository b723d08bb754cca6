"""Which failures a step's retry policy waits on: only those that may mend by waiting."""

import pytest

from fruits_assets.spark.errors import lasting_error


class AnalysisException(Exception):
    """Named as PySpark names its analysis errors."""


class WrappedByPy4J(Exception):
    """What Spark raises on the driver when a Python worker failed: the worker's traceback in its text."""


WORKER_TRACE = """An exception was thrown from the Python worker. Please see the stack trace below.
Traceback (most recent call last):
  File "/opt/fruits/lib/python3.11/site-packages/fruits_assets/vision/engines.py", line 40, in load
    import tensorflow as tf
ModuleNotFoundError: No module named 'tensorflow'
"""


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (ModuleNotFoundError("No module named 'tensorflow'"), "ModuleNotFoundError: No module named 'tensorflow'"),
        (TypeError("unsupported operand"), "TypeError: unsupported operand"),
        (AnalysisException("[UNRESOLVED_COLUMN] `pc_9`"), "AnalysisException: [UNRESOLVED_COLUMN] `pc_9`"),
        (WrappedByPy4J(WORKER_TRACE), "ModuleNotFoundError: No module named 'tensorflow'"),
    ],
)
def test_errors_that_fail_every_attempt_are_named_by_their_line(error, line):
    assert lasting_error(error) == line


@pytest.mark.parametrize(
    "error",
    [
        ConnectionResetError("connection reset by peer"),
        TimeoutError("read timed out"),
        OSError("503 SlowDown"),
        WrappedByPy4J("org.apache.spark.SparkException: Job aborted: ExecutorLostFailure (executor 3 exited)"),
        MemoryError(),
    ],
)
def test_errors_that_may_mend_by_waiting_are_retried(error):
    assert lasting_error(error) is None


def test_the_chain_of_causes_is_followed():
    try:
        try:
            raise AttributeError("'NoneType' object has no attribute 'features'")
        except AttributeError as cause:
            raise RuntimeError("the chunk failed") from cause
    except RuntimeError as error:
        assert lasting_error(error) == "AttributeError: 'NoneType' object has no attribute 'features'"


def test_a_step_fails_at_once_on_a_lasting_error_and_is_tried_again_on_a_transient_one():
    from dagster import DagsterEventType, RetryPolicy, job, op

    from fruits_assets.assets.config import retried_only_if_transient

    def attempts(error: Exception) -> tuple[int, str]:
        @op(retry_policy=RetryPolicy(max_retries=1))
        @retried_only_if_transient
        def step() -> None:
            raise error

        @job
        def one_step() -> None:
            step()

        result = one_step.execute_in_process(raise_on_error=False)
        events = result.all_events
        retries = [e for e in events if e.event_type == DagsterEventType.STEP_UP_FOR_RETRY]
        [failure] = [e for e in events if e.event_type == DagsterEventType.STEP_FAILURE]
        return 1 + len(retries), str(failure.event_specific_data.error)

    tried, error = attempts(ModuleNotFoundError("No module named 'tensorflow'"))
    assert tried == 1 and "ModuleNotFoundError: No module named 'tensorflow' (not retried" in error
    tried, error = attempts(ConnectionResetError("connection reset by peer"))
    assert tried == 2 and "connection reset by peer" in error
