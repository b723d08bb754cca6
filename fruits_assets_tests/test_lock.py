"""One run at a time per storage root: a second run fails fast, names the first, and writes nothing; a run that
only reads (the freshness checks) takes no lock."""

import os
import subprocess
import time

from dagster import DagsterEventType

from fruits_assets.definitions import FEATURE_PIPELINE

from .conftest import materialize_command, run_graph, table, write_tree

COLORS = {"Kiwi 1": (120, 100, 40), "Lemon 1": (240, 220, 40)}


def _freshness_checks(root, storage):
    """The hourly schedule's job, in this process."""
    from fruits_assets.definitions import build_defs
    from fruits_assets.settings import Settings

    defs = build_defs(Settings(images=str(root), storage=str(storage)))
    return defs.resolve_job_def("freshness_checks").execute_in_process(raise_on_error=False)


def test_a_run_started_while_another_writes_the_same_storage_fails_fast_and_the_first_completes(tmp_path):
    root, storage = tmp_path / "images", tmp_path / "storage"
    write_tree(root, {"Test/Kiwi 1": 200, "Test/Lemon 1": 200}, COLORS)
    env = {**os.environ, "FRUITS_IMAGES": str(root), "FRUITS_STORAGE": str(storage), "DAGSTER_HOME": str(tmp_path)}
    log = tmp_path / "first.log"
    with log.open("w") as out:
        first = subprocess.Popen(materialize_command(FEATURE_PIPELINE), env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while "STEP_START" not in log.read_text():  # the first run holds the lock from before its first step
        assert first.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)

    began = time.monotonic()
    second = run_graph(root, storage, raise_on_error=False)
    refused_in = time.monotonic() - began
    assert not second.success
    failure = next(e for e in second.all_events if e.event_type == DagsterEventType.RUN_FAILURE)
    message = failure.event_specific_data.error.cause.message
    assert f"storage root {storage} is being written by run" in message and "nothing was done" in message
    assert not [e for e in second.all_events if e.event_type == DagsterEventType.STEP_START]
    assert first.poll() is None  # the refusal came while the first run was still at work
    assert refused_in < 30
    # The hourly freshness checks only read: they take no lock, so they answer while the first run writes.
    checks = _freshness_checks(root, storage)
    assert checks.success and len(checks.get_asset_check_evaluations()) == 2
    assert first.poll() is None

    assert first.wait(timeout=600) == 0, log.read_text()[-3000:]
    assert len(table(storage / "mobilenet_features")) == 400
    assert run_graph(root, storage, select=FEATURE_PIPELINE).success  # the lock is free again once the first ended
