"""The real `dg dev` (Dagster's webserver and daemon) on loopback, with the project's dagster.yaml, for the tests of
what runs by itself: sensors, automation, the run queue."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter

from fruits_assets.resources.guard import READ_ONLY_TAG

from .conftest import DAGSTER, free_port, start_server, stop_server

PROJECT = Path(__file__).resolve().parents[1]
ACTIVE = (DagsterRunStatus.STARTING, DagsterRunStatus.STARTED)
DONE = (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)


def _wait_until_up(url: str, process, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dg dev exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@contextlib.contextmanager
def dagster_dev(home: Path, env: dict[str, str], log: Path) -> Iterator[tuple[str, DagsterInstance]]:
    """`dg dev` with DAGSTER_HOME=`home` holding the project's dagster.yaml; yields its URL and the instance."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    command = [str(DAGSTER.with_name("dg")), "dev", "-h", "127.0.0.1", "-p", str(port)]
    process = start_server(command, log, cwd=PROJECT, env={**os.environ, **env, "DAGSTER_HOME": str(home)})
    try:
        _wait_until_up(f"http://127.0.0.1:{port}/server_info", process, timeout=180)
        yield f"http://127.0.0.1:{port}", DagsterInstance.from_config(str(home))
    finally:
        stop_server(process)


def runs(instance: DagsterInstance, **tags: str) -> list[DagsterRun]:
    """The instance's runs, oldest first (those carrying `tags` only)."""
    found = instance.get_runs(filters=RunsFilter(tags=tags) if tags else None)
    return sorted(found, key=lambda run: instance.get_run_record_by_id(run.run_id).create_timestamp)


def wait_for(what: str, condition: Callable[[], object], timeout: float, every: float = 0.5) -> object:
    """Poll `condition` until it is truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def status(instance: DagsterInstance, run: DagsterRun) -> DagsterRunStatus:
    return instance.get_run_by_id(run.run_id).status


def materialized(instance: DagsterInstance, run: DagsterRun, asset: str) -> dict:
    """The metadata of `asset`'s materialization in `run`."""
    for record in instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
        materialization = record.dagster_event.event_specific_data.materialization
        if materialization.asset_key.to_user_string() == asset:
            return {k: v.value for k, v in materialization.metadata.items()}
    raise AssertionError(f"run {run.run_id} did not materialize {asset}")


def writing_runs(instance: DagsterInstance) -> list[DagsterRun]:
    """The instance's runs but the hourly freshness checks' (tagged read-only): those may start at any top of
    the hour, beside anything, so a count of what the sensors and the automation launched leaves them out."""
    return [run for run in instance.get_runs() if run.tags.get(READ_ONLY_TAG) != "true"]


def settled(instance: DagsterInstance, quiet_seconds: float) -> bool:
    """Nothing running or waiting for `quiet_seconds` (the sensors and the automation had their turn), and every
    run so far a success."""
    records = instance.get_run_records()
    failed = [r.dagster_run.run_id for r in records if r.dagster_run.status == DagsterRunStatus.FAILURE]
    assert not failed, f"runs failed: {failed}"
    if not records or any(r.dagster_run.status not in DONE for r in records):
        return False
    return time.time() - max(r.update_timestamp.timestamp() for r in records) > quiet_seconds
