"""A run killed (SIGKILL, no clean-up) in the middle of featurization loses nothing."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from .conftest import materialize_command, write_tree

COLORS = {"Apple Red 1": (200, 20, 30), "Banana 1": (240, 220, 40)}


def start(root: Path, storage: Path, home: Path, log: Path, engine: str = "litert") -> subprocess.Popen:
    env = {**os.environ, "FRUITS_IMAGES": str(root), "FRUITS_STORAGE": str(storage), "DAGSTER_HOME": str(home)}
    config = {"ops": {"mobilenet_features": {"config": {"engine": engine}}}}
    with log.open("w") as out:
        return subprocess.Popen(
            [*materialize_command(), "--config-json", json.dumps(config)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the JVM and Python workers die with it
        )


def snapshot(storage: Path) -> dict:
    features = pq.read_table(storage / "mobilenet_features").to_pandas().sort_values("path", ignore_index=True)
    return {
        "csv": (storage / "pca_features.csv").read_bytes(),
        "paths": features["path"].tolist(),
        "features": [f.tolist() for f in features["features"]],
        "model": sorted(str(p.relative_to(storage)) for p in (storage / "pca_model").rglob("*") if p.is_file()),
    }


@pytest.mark.spark
def test_a_killed_run_leaves_every_previous_output_intact_and_the_next_run_completes(tmp_path):
    root, storage, home = tmp_path / "images", tmp_path / "storage", tmp_path / "home"
    home.mkdir()
    write_tree(root, {"Test/Apple Red 1": 6, "Test/Banana 1": 6}, COLORS)
    first = start(root, storage, home, tmp_path / "first.log")
    assert first.wait(timeout=600) == 0, (tmp_path / "first.log").read_text()[-3000:]
    before = snapshot(storage)

    write_tree(root, {"Training/Apple Red 1": 600, "Training/Banana 1": 600}, COLORS)
    # The TensorFlow engine is a different featurizer: all 1,212 images go through the model, which takes
    # several seconds. The features are computed by the write of their staging dataset: once it exists,
    # featurization is under way.
    killed = start(root, storage, home, tmp_path / "killed.log", engine="tensorflow")
    deadline = time.monotonic() + 300
    while not list(storage.glob("mobilenet_features.staging-*")):
        assert killed.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "featurization never started"
        time.sleep(0.1)
    time.sleep(1.0)
    assert killed.poll() is None, "the run finished before it could be killed"
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait(timeout=60)

    assert snapshot(storage) == before  # every previous output readable and unchanged
    assert list(storage.glob("mobilenet_features.staging-*"))  # the kill did land mid-write

    last = start(root, storage, home, tmp_path / "last.log")
    assert last.wait(timeout=600) == 0, (tmp_path / "last.log").read_text()[-3000:]
    after = snapshot(storage)
    assert len(after["paths"]) == 1212 and set(before["paths"]) < set(after["paths"])
    assert sorted(p.name for p in storage.iterdir()) == sorted(
        ["labeled_images", "mobilenet_features", "pca_features", "pca_features.csv", "pca_model", "raw_images"]
        + ["rejected_images", "class_index.json"]
    )
