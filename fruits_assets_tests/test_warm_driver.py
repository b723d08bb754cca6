"""A Spark driver kept warm between runs: the next run attaches to it, one run at a time, and whatever a run
leaves (killed or not) is cleared; it goes when idle or worn out, or when it no longer answers.

Each run here is a process of its own, as runs are: `attached_session` in a small
Python program, and at the end two `dagster asset materialize` from the shell.
"""

import contextlib
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fruits_assets.spark.config import app_config, jars_config, local_config
from fruits_assets.spark.warm_driver import (
    CONNECTION,
    PREVIOUS_LOG,
    WarmDriverUnavailable,
    attached_session,
    driver_key,
    stop_drivers,
    sweep_stopped,
)

from .conftest import materialize_command, table, write_tree
from .outputs import TABLE_KEYS

SCREENING = ("raw_images", "labeled_images", "rejected_images", "mobilenet_features", "class_index")
CHUNKS_OF_TEN = {"ops": {"screen_and_featurize": {"config": {"chunk_files": 10}}}}
# A run's process, SIGTERM ignored as Dagster leaves it in a shell's background job (SIGINT ignored there, and
# Dagster gives SIGTERM SIGINT's handler): a driver it starts must not inherit that, or stop_drivers cannot stop it.
RUN = """
import json, signal, sys, threading, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
from pathlib import Path
from fruits_assets.spark.warm_driver import WarmDriverUnavailable, attached_session
config, root, action = json.loads(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
try:
    attached = attached_session(config, float(sys.argv[4]), root, int(sys.argv[5]))
except WarmDriverUnavailable as why:
    print(json.dumps({"unavailable": str(why)}), flush=True)
    sys.exit(0)
spark = attached.session
tracker = spark.sparkContext.statusTracker()
out = {"pid": attached.pid, "started": attached.started, "app": spark.sparkContext.applicationId,
       "running_when_attached": list(tracker.getActiveJobsIds())}
if action == "sum":
    out["sum"] = spark.range(1000).selectExpr("sum(id) AS s").first()["s"]
elif action == "hold":
    print(json.dumps(out), flush=True)
    time.sleep(600)
elif action == "long_job":
    slow = spark.range(2).repartition(2).rdd.map(lambda x: time.sleep(600) or x)
    threading.Thread(target=slow.count, daemon=True).start()
    while not tracker.getActiveJobsIds():
        time.sleep(0.1)
    out["running"] = list(tracker.getActiveJobsIds())
    print(json.dumps(out), flush=True)
    time.sleep(600)
print(json.dumps(out), flush=True)
"""


@pytest.fixture
def drivers(tmp_path):
    """A folder of drivers of this test's own, every driver in it stopped when the test ends."""
    root = tmp_path / "drivers"
    yield root
    stop_drivers(root)


def _config(master: str = "local[1]") -> dict[str, str]:
    return app_config(sys.executable, sys.executable) | local_config(master) | jars_config("delta")


def _run(root: Path, action: str = "sum", config: dict | None = None, idle: float = 60, runs: int = 25) -> dict:
    """A run that attaches, does `action` and ends; what it saw."""
    done = subprocess.run(
        [sys.executable, "-c", RUN, json.dumps(config or _config()), str(root), action, str(idle), str(runs)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _started(root: Path, action: str, config: dict | None = None) -> tuple[subprocess.Popen, dict]:
    """A run that attaches and stays (`hold`, `long_job`); the process and what it printed once attached."""
    process = subprocess.Popen(
        [sys.executable, "-c", RUN, json.dumps(config or _config()), str(root), action, "60", "25"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    return process, json.loads(process.stdout.readline())


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def _connection(root: Path, config: dict | None = None) -> dict:
    return json.loads((root / driver_key(config or _config()) / CONNECTION).read_text())


@pytest.mark.spark
def test_the_next_run_attaches_to_the_driver_the_first_started_and_one_run_at_a_time(drivers):
    first = _run(drivers)
    assert first["started"] and first["sum"] == 499500
    second = _run(drivers)
    assert not second["started"] and second["sum"] == 499500
    assert (second["pid"], second["app"]) == (first["pid"], first["app"])  # the same driver, the same JVM

    holding, attached = _started(drivers, "hold")
    try:
        assert attached["pid"] == first["pid"]
        # lent to the run holding it: this one starts a JVM of its own
        assert _run(drivers) == {"unavailable": "the warm driver is lent to another run"}
    finally:
        os.killpg(holding.pid, signal.SIGKILL)
        holding.wait()
    assert _run(drivers)["pid"] == first["pid"]  # back to lending once that run is gone


@pytest.mark.spark
def test_a_driver_asked_to_stop_while_lent_goes_when_its_run_ends(drivers):
    holding, attached = _started(drivers, "hold")
    try:
        assert stop_drivers(drivers) == []  # not under the run that holds it
        assert not _gone(attached["pid"], within=2)
    finally:
        os.killpg(holding.pid, signal.SIGKILL)
        holding.wait()
    assert _gone(attached["pid"], within=30), "a driver asked to stop outlived the run that held it"
    folder = drivers / driver_key(_config())
    assert not (folder / CONNECTION).exists()
    anew = _run(drivers)
    assert anew["started"] and anew["pid"] != attached["pid"]
    time.sleep(2)  # a request it took for its own would have stopped it by now
    assert _run(drivers)["pid"] == anew["pid"]


@pytest.mark.spark
def test_a_killed_run_s_job_is_cancelled_by_the_driver_and_the_next_run_finds_nothing_running(drivers):
    killed, attached = _started(drivers, "long_job")
    [job] = attached["running"]
    ui = _connection(drivers)["ui"]
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()

    # No other run comes: the driver itself cancels what the killed run left running, as a JVM dying with it did.
    deadline = time.monotonic() + 30
    while (status := _job_status(ui, attached["app"], job)) == "RUNNING":
        assert time.monotonic() < deadline, "the killed run's job still runs"
        time.sleep(0.5)
    assert status == "FAILED"
    after = _run(drivers)
    assert after["pid"] == attached["pid"] and after["running_when_attached"] == []

    # A run that attaches the moment another is killed cancels what it left, before the driver has noticed.
    killed, attached = _started(drivers, "long_job")
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert _run(drivers)["sum"] == 499500
    assert _job_status(ui, attached["app"], attached["running"][0]) == "FAILED"


def _job_status(ui: str, app: str, job: int) -> str:
    """A job's status from the driver's own Spark UI (its REST API), without attaching to it."""
    with urllib.request.urlopen(f"{ui}/api/v1/applications/{app}/jobs/{job}", timeout=10) as answer:
        return json.load(answer)["status"]


@pytest.mark.spark
def test_a_driver_goes_when_idle_or_worn_out_and_other_settings_get_another(drivers):
    first = _run(drivers, idle=2)
    assert _gone(first["pid"], within=30), "an idle driver outlived its idle time"
    assert not (drivers / driver_key(_config()) / CONNECTION).exists()
    again = _run(drivers, runs=2)
    assert again["started"] and again["pid"] != first["pid"]
    previous = drivers / driver_key(_config()) / PREVIOUS_LOG  # the first one's log, kept beside the new one's
    assert "exits after 1 run(s)" in previous.read_text()

    assert _run(drivers, runs=2)["pid"] == again["pid"]  # its second and last run
    assert _gone(again["pid"], within=30), "a driver served more runs than it was to"
    idle = _run(drivers, idle=600)  # it would outlive the test by itself: only the new one's start ends it
    assert idle["started"]

    # Other settings (other code, say) get a driver of their own, and the idle one of the old settings goes.
    other = _run(drivers, config=_config("local[2]"))
    assert other["started"] and other["pid"] != idle["pid"]
    # Within 90 s: in a local run of the whole suite (two test files at once) it was still there 30 s after.
    assert _gone(idle["pid"], within=90), "an idle driver of other settings outlived the new one's start"
    assert _connection(drivers, _config("local[2]"))["pid"] == other["pid"]


def test_drivers_live_only_in_folders_no_one_else_may_write(tmp_path):
    shared = tmp_path / "drivers"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)  # as another user could have made it first, to plant a gateway of their own there
    with pytest.raises(WarmDriverUnavailable, match="not a folder of this user's own that only they may write"):
        attached_session(_config(), 60, shared)
    assert list(shared.iterdir()) == []  # nothing started, nothing written


@pytest.mark.spark
def test_a_driver_that_died_is_replaced_by_the_next_run(drivers):
    first = _run(drivers)
    os.killpg(first["pid"], signal.SIGKILL)  # the driver and its JVM, as an out-of-memory kill would
    assert _gone(first["pid"], within=30)
    replaced = _run(drivers)
    assert replaced["started"] and replaced["pid"] != first["pid"] and replaced["sum"] == 499500


def _shell_runs(tmp_path: Path, per_folder: int) -> tuple[dict[str, str], Path]:
    """Photos of two kinds for runs from the shell, and their environment: drivers under the test's own temporary
    folder (no other test's run holds them); the folder those drivers live under."""
    colors = {"Kiwi 1": (120, 100, 40), "Lemon 1": (240, 220, 40)}
    root, home, temporary = tmp_path / "images", tmp_path / "home", tmp_path / "tmp"
    write_tree(root, {"Test/Kiwi 1": per_folder, "Test/Lemon 1": per_folder}, colors)
    home.mkdir()
    temporary.mkdir()
    return {**os.environ, "FRUITS_IMAGES": str(root), "DAGSTER_HOME": str(home), "TMPDIR": str(temporary)}, temporary


def _stopped_drivers(temporary: Path) -> list[int]:
    return [pid for folder in temporary.glob("fruits_assets-*/spark-drivers") for pid in stop_drivers(folder)]


def _assert_same_tables(storage: Path, expected: Path) -> None:
    """The screening's tables under `storage` hold what those under `expected` hold, feature vectors included."""
    for name, columns in TABLE_KEYS.items():
        got, wanted = (table(s / name).sort_values("path", ignore_index=True) for s in (storage, expected))
        pd.testing.assert_frame_equal(got[columns], wanted[columns])
        if name == "mobilenet_features":
            assert np.array_equal(np.stack(got["features"]), np.stack(wanted["features"]))


@pytest.mark.spark
def test_runs_from_the_shell_share_a_warm_driver_and_write_what_a_run_with_its_own_jvm_writes(tmp_path):
    env, temporary = _shell_runs(tmp_path, 8)
    select = ",".join(SCREENING)  # the listing, the screening and its tables: where a small run's fixed costs are
    logs = []
    try:
        for storage in ("first", "second", "cold"):
            env["FRUITS_STORAGE"] = str(tmp_path / storage)
            env["FRUITS_SPARK_KEEP_WARM_SECONDS"] = "0" if storage == "cold" else "60"
            run = subprocess.run(materialize_command(select), env=env, capture_output=True, text=True, timeout=600)
            assert run.returncode == 0, run.stderr[-3000:]
            logs.append(run.stderr)
    finally:
        stopped = _stopped_drivers(temporary)
    assert len(stopped) == 1
    first, second, cold = logs
    assert "Spark: started a warm driver" in first
    assert "Spark: attached to the warm driver" in second  # another storage root, the same driver
    assert "warm driver" not in cold  # with 0: a JVM of the run's own, as before
    _assert_same_tables(tmp_path / "second", tmp_path / "cold")


def _jvm_below(pid: int) -> int:
    """The Spark JVM among `pid`'s descendants."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    below, grew = {pid}, True
    while grew:
        more = {child for child, parent in parents.items() if parent in below} - below
        below, grew = below | more, bool(more)
    for child in below - {pid}:
        with contextlib.suppress(OSError):
            command = Path(f"/proc/{child}/cmdline").read_bytes()
            if command.split(b"\0", 1)[0].endswith(b"java") and b"SparkSubmit" in command:
                return child
    raise AssertionError(f"no Spark JVM below {pid}")


@pytest.mark.spark
@pytest.mark.parametrize("keep_warm", ["60", "0"], ids=["warm_driver", "own_jvm"])
def test_a_run_whose_jvm_dies_mid_step_retries_the_step_on_another_and_writes_what_a_whole_run_writes(
    keep_warm, tmp_path
):
    env, temporary = _shell_runs(tmp_path, 15)
    command = [*materialize_command(",".join(SCREENING)), "--config-json", json.dumps(CHUNKS_OF_TEN)]
    log = tmp_path / "run.log"
    run = None
    try:
        env["FRUITS_STORAGE"], env["FRUITS_SPARK_KEEP_WARM_SECONDS"] = str(tmp_path / "broken"), keep_warm
        with log.open("w") as out:
            run = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 600
        while "chunk 1/3 committed" not in log.read_text():
            assert run.poll() is None and time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.1)
        driver = re.search(r"started a warm driver, pid (\d+)", log.read_text())
        first = int(driver.group(1)) if driver else None
        assert (first is not None) == (keep_warm != "0")
        os.kill(_jvm_below(first or run.pid), signal.SIGKILL)  # the JVM alone, as the out-of-memory killer would
        assert run.wait(timeout=600) == 0, log.read_text()[-4000:]
        env["FRUITS_STORAGE"], env["FRUITS_SPARK_KEEP_WARM_SECONDS"] = str(tmp_path / "whole"), "0"
        whole = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert whole.returncode == 0, whole.stderr[-3000:]
    finally:
        if run is not None and run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        stopped = _stopped_drivers(temporary)
    text = log.read_text()
    assert text.count("STEP_UP_FOR_RETRY") == 1, "the kill came after the step's last Spark call, or a retry failed"
    assert "Spark: the JVM this run used no longer answers; starting another" in text
    if first is not None:
        started = {int(pid) for pid in re.findall(r"started a warm driver, pid (\d+)", text)}
        assert started - {first} == set(stopped) and len(stopped) == 1  # the retry's driver, the one left warm
    else:
        assert "warm driver" not in text and not stopped
    _assert_same_tables(tmp_path / "broken", tmp_path / "whole")
    assert len(table(tmp_path / "broken" / "mobilenet_features")) == 30


def test_stopped_drivers_folders_go_after_a_day_and_running_or_starting_ones_stay(tmp_path):
    root = tmp_path / "drivers"
    day_old = time.time() - 2 * 86_400

    def folder(name: str, *files: str, old: bool = True) -> Path:
        path = root / name
        path.mkdir(parents=True)
        for file in files:
            (path / file).write_text("{}")
            if old:
                os.utime(path / file, (day_old, day_old))
        return path

    stopped = folder("stopped", "driver.log", "runs", "config.json")
    recent = folder("recent", "driver.log", old=False)  # stopped an hour ago, say: its log is still wanted
    running = folder("running", "driver.log", CONNECTION)  # a gateway: a driver stop_drivers would stop first
    starting = folder("starting", "driver.log", "lease")
    with open(starting / "lease", "a+") as held:  # a run holds its lease while it starts a driver there
        fcntl.flock(held, fcntl.LOCK_EX)
        assert sweep_stopped(root) == [stopped]
    assert not stopped.exists() and recent.exists() and running.exists() and starting.exists()
    assert sweep_stopped(root) == [starting]  # once no run holds it
