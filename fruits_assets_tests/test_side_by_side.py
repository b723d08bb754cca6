"""Spark work run side by side (`spark/progress.py side_by_side`): results in order, the job description carried
into each thread, and a failure cancelling the others' running jobs."""

import threading
import time

import pytest

from fruits_assets.spark.progress import job_description, side_by_side


@pytest.mark.spark
def test_results_come_in_order_and_each_thread_carries_the_callers_job_description(spark):
    def described(n: int):
        def call():
            count = spark.range(n).count()
            return count, spark.sparkContext.getLocalProperty("spark.job.description")

        return call

    with job_description(spark, "a step: its fits"):
        results = side_by_side(spark, [described(n) for n in (3, 5, 7)])
    assert results == [(3, "a step: its fits"), (5, "a step: its fits"), (7, "a step: its fits")]
    assert side_by_side(spark, []) == []


@pytest.mark.spark
def test_a_failing_call_cancels_the_jobs_the_others_are_running(spark):
    outcome, running = [], threading.Event()

    def slow() -> None:
        def sleepy(rows):
            time.sleep(30)  # what a cancelled job leaves running on the shared session: keep it short
            return rows

        running.set()
        try:
            spark.range(2).rdd.mapPartitions(sleepy).count()
            outcome.append("finished")
        except Exception as error:  # what the cancelled job raised is the point
            outcome.append("cancelled" if "cancel" in str(error).lower() else repr(error)[:300])
            raise

    def failing() -> None:
        running.wait(30)
        time.sleep(3)  # the slow job under way
        raise ValueError("a fold went wrong")

    with pytest.raises(ValueError, match="a fold went wrong"):
        side_by_side(spark, [slow, failing])
    # side_by_side returns once every thread ended: the slow one's job was cancelled, not waited for.
    assert outcome == ["cancelled"]
    assert spark.sparkContext.statusTracker().getActiveJobsIds() == []
