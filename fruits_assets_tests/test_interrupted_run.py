"""A run killed (SIGKILL, no clean-up) in the middle of a rerun loses nothing; the next run carries on."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from fruits_assets.definitions import FEATURE_PIPELINE

from .conftest import materialize_command, table, write_tree

COLORS = {"Apple Red 1": (200, 20, 30), "Banana 1": (240, 220, 40)}


def start(root: Path, storage: Path, home: Path, log: Path, engine: str = "litert") -> subprocess.Popen:
    env = {**os.environ, "FRUITS_IMAGES": str(root), "FRUITS_STORAGE": str(storage), "DAGSTER_HOME": str(home)}
    config = {"ops": {"screen_and_featurize": {"config": {"engine": engine}}}}
    with log.open("w") as out:
        return subprocess.Popen(
            [*materialize_command(FEATURE_PIPELINE), "--config-json", json.dumps(config)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the JVM and Python workers die with it
        )


def snapshot(storage: Path) -> dict:
    """What a reader finds, read without Spark: every table's rows, the CSV, the current model."""
    features = table(storage / "mobilenet_features").sort_values("path", ignore_index=True)
    return {
        "csv": (storage / "pca_features.csv").read_bytes(),
        "paths": features["path"].tolist(),
        "features": [f.tolist() for f in features["features"]],
        "rows": {name: len(table(storage / name)) for name in ("raw_images", "labeled_images", "pca_features")},
        "model": (storage / "pca_model" / "current.json").read_text(),
    }


@pytest.mark.spark
def test_a_run_killed_mid_rerun_leaves_every_previous_version_readable_and_the_next_run_completes(tmp_path):
    root, storage, home = tmp_path / "images", tmp_path / "storage", tmp_path / "home"
    home.mkdir()
    write_tree(root, {"Test/Apple Red 1": 6, "Test/Banana 1": 6}, COLORS)
    first = start(root, storage, home, tmp_path / "first.log")
    assert first.wait(timeout=600) == 0, (tmp_path / "first.log").read_text()[-3000:]
    before = snapshot(storage)

    write_tree(root, {"Training/Apple Red 1": 600, "Training/Banana 1": 600}, COLORS)
    # The TensorFlow engine is a different featurizer: all 1,212 images go through the model, which takes
    # several seconds, and nothing is committed before the model has seen them all.
    log = tmp_path / "killed.log"
    killed = start(root, storage, home, log, engine="tensorflow")
    deadline = time.monotonic() + 300
    while "1212 files to read" not in log.read_text():
        assert killed.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "featurization never started"
        time.sleep(0.1)
    time.sleep(2.0)
    assert killed.poll() is None, "the run finished before it could be killed"
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait(timeout=60)

    # raw_images had committed the new listing before the kill; every later asset reads as it was.
    after_kill = snapshot(storage)
    assert after_kill["rows"]["raw_images"] == 1212
    assert {k: v for k, v in after_kill.items() if k != "rows"} == {k: v for k, v in before.items() if k != "rows"}
    assert after_kill["rows"]["labeled_images"] == before["rows"]["labeled_images"] == 12
    assert table(storage / "raw_images", version=0).shape[0] == 12  # and the previous listing by its version

    last = start(root, storage, home, tmp_path / "last.log")
    assert last.wait(timeout=600) == 0, (tmp_path / "last.log").read_text()[-3000:]
    after = snapshot(storage)
    assert len(after["paths"]) == 1212 and set(before["paths"]) < set(after["paths"])
    assert sorted(p.name for p in storage.iterdir()) == sorted(
        ["raw_images", "labeled_images", "rejected_images", "mobilenet_features", "pca_model", "pca_features"]
        + ["pca_features.csv", "pca_features.csv.json", "class_index.json", ".fruits-run.lock"]
    )
