"""The graph on a real Spark standalone cluster: one master and two workers, all on loopback.

Started with `spark-class` from pyspark's own distribution, everything bound to 127.0.0.1
(`SPARK_LOCAL_IP`). The run uses `FRUITS_DEPLOYMENT=cluster`; its event log says which
executor ran which task, and each executor's log URL names its worker.
"""

import json
import os
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from pyspark.find_spark_home import _find_spark_home

from fruits_assets.definitions import FEATURE_PIPELINE

from .conftest import free_port, materialize_in_shell, run_graph, start_server, stop_server, table, write_tree

SPARK_HOME = Path(_find_spark_home())
COLORS = {"Apple Red 1": (200, 20, 30), "Banana 1": (240, 220, 40), "Kiwi 1": (120, 100, 40)}
LOOPBACK = "127.0.0.1"


def _spark_env(conf_dir: Path) -> dict[str, str]:
    return {**os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": LOOPBACK, "SPARK_CONF_DIR": str(conf_dir)}


def _json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A standalone master and two one-core workers; yields the master URL and the Spark conf folder."""
    work = tmp_path_factory.mktemp("cluster")
    conf_dir, events = work / "conf", work / "events"
    conf_dir.mkdir()
    events.mkdir()
    # What a team puts in spark-defaults.conf: event logs for the history server. No locality wait,
    # so the few tasks of a small test spread at once instead of queueing for the busiest executor.
    (conf_dir / "spark-defaults.conf").write_text(
        f"spark.eventLog.enabled true\nspark.eventLog.dir file:{events}\nspark.eventLog.compress false\n"
        "spark.locality.wait 0s\n"
    )
    env = _spark_env(conf_dir)
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    port, ui = free_port(), free_port()
    master_url = f"spark://{LOOPBACK}:{port}"
    master = [spark_class, "org.apache.spark.deploy.master.Master", "--host", LOOPBACK, "--port", str(port)]
    processes = [start_server([*master, "--webui-port", str(ui)], work / "master.log", env=env)]
    for i in range(2):
        (work / f"worker{i}").mkdir()
        worker = [spark_class, "org.apache.spark.deploy.worker.Worker", master_url, "--host", LOOPBACK]
        options = ["--cores", "1", "--memory", "3g", "--webui-port", str(free_port()), "--work-dir"]
        processes.append(start_server([*worker, *options, str(work / f"worker{i}")], work / f"worker{i}.log", env=env))
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                alive = [w for w in _json(f"http://{LOOPBACK}:{ui}/json/")["workers"] if w["state"] == "ALIVE"]
                if len(alive) == 2:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (work / "master.log").read_text()[-3000:]
            time.sleep(0.5)
        yield master_url, conf_dir, events, alive
    finally:
        for process in reversed(processes):  # workers first, then the master they report to
            stop_server(process)


def _materialize(root: Path, storage: Path, env: dict[str, str]) -> None:
    """The feature pipeline (images to the CSV) from the shell: what a cluster changes; the classifier's steps run
    on the same session and are tested elsewhere."""
    home = storage.parent / f"{storage.name}_home"
    home.mkdir()
    env = {**env, "FRUITS_IMAGES": str(root), "FRUITS_STORAGE": str(storage), "DAGSTER_HOME": str(home)}
    materialize_in_shell(env, FEATURE_PIPELINE)


def _features(storage: Path) -> dict[str, np.ndarray]:
    stored = table(storage / "mobilenet_features")
    return dict(zip(stored["path"], stored["features"], strict=True))


def _featurize_tasks_per_worker(events: Path) -> dict[str, int]:
    """Featurization tasks per worker (named by the port of the worker's log URL), from the event log."""
    [app] = list(events.iterdir())  # Spark 4 writes a folder of rolling event files per application
    lines = [line for part in sorted(p for p in app.rglob("events_*")) for line in part.read_text().splitlines()]
    executors, stage_jobs, per_worker = {}, {}, defaultdict(int)
    for line in lines:
        event = json.loads(line)
        kind = event["Event"]
        if kind == "SparkListenerExecutorAdded":
            stdout_url = event["Executor Info"]["Log Urls"]["stdout"]
            executors[event["Executor ID"]] = stdout_url.split("/")[2]  # host:port of the worker's UI
        elif kind == "SparkListenerJobStart":
            description = (event.get("Properties") or {}).get("spark.job.description", "")
            for stage in event["Stage IDs"]:
                stage_jobs[stage] = description
        elif kind == "SparkListenerTaskEnd" and "read, screen and featurize" in stage_jobs.get(event["Stage ID"], ""):
            per_worker[executors[event["Task Info"]["Executor ID"]]] += 1
    return dict(per_worker)


@pytest.mark.spark
def test_the_graph_on_a_standalone_cluster_matches_the_local_run_and_uses_both_workers(cluster, tmp_path):
    master_url, conf_dir, events, workers = cluster
    root = tmp_path / "images"
    write_tree(root, {f"Test/{label}": 40 for label in COLORS}, COLORS)

    assert run_graph(root, tmp_path / "local", select=FEATURE_PIPELINE).success  # the local deployment
    cluster_env = {**_spark_env(conf_dir), "FRUITS_DEPLOYMENT": "cluster", "FRUITS_SPARK_MASTER": master_url}
    _materialize(root, tmp_path / "cluster", cluster_env)

    local, on_cluster = _features(tmp_path / "local"), _features(tmp_path / "cluster")
    assert sorted(local) == sorted(on_cluster) and len(local) == 120
    assert max(np.abs(local[p] - on_cluster[p]).max() for p in local) <= 1e-3
    assert (tmp_path / "cluster" / "pca_features.csv").read_bytes().count(b"\n") == 121

    per_worker = _featurize_tasks_per_worker(events)
    worker_uis = {w["webuiaddress"].split("/")[2] for w in workers}
    assert set(per_worker) == worker_uis, per_worker  # both workers featurized images
    assert all(tasks >= 1 for tasks in per_worker.values())
