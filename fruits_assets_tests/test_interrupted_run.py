"""A long first run commits as it goes: killed (SIGKILL) in its third chunk, it keeps the first two, and the next
run reads only what they did not commit and ends equal to a fresh run."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from fruits_assets.definitions import FEATURE_PIPELINE

from .conftest import materialize_command, run_graph, table, write_tree
from .outputs import assert_same_outputs, snapshot

COLORS = {"Apple Red 1": (200, 20, 30), "Banana 1": (240, 220, 40)}
CHUNK = 30
CONFIG = {"ops": {"screen_and_featurize": {"config": {"chunk_files": CHUNK}}}}


def killed_in_third_chunk(root: Path, storage: Path, home: Path) -> None:
    """A first run from the shell, stopped right after its third chunk's first commit (features, before its
    labels), and killed there with its whole process group: a chunk half committed."""
    env = {**os.environ, "FRUITS_IMAGES": str(root), "FRUITS_STORAGE": str(storage), "DAGSTER_HOME": str(home)}
    env["FRUITS_PAUSE_AFTER_COMMIT"] = "mobilenet_features:3"
    log = home / "killed.log"
    with log.open("w") as out:
        run = subprocess.Popen(
            [*materialize_command(FEATURE_PIPELINE), "--config-json", json.dumps(CONFIG)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the JVM and Python workers die with it
        )
    deadline = time.monotonic() + 600
    while "paused after committing mobilenet_features" not in log.read_text():
        assert run.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "the run never reached its third chunk"
        time.sleep(0.2)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait(timeout=60)
    text = log.read_text()
    assert "chunk 2/5 committed" in text and "chunk 3/5 committed" not in text


@pytest.mark.spark
def test_a_first_run_killed_in_its_third_chunk_keeps_two_and_the_next_reads_only_the_rest(tmp_path):
    root, storage, home = tmp_path / "images", tmp_path / "storage", tmp_path / "home"
    home.mkdir()
    write_tree(root, {"Training/Apple Red 1": 70, "Training/Banana 1": 80}, COLORS)  # 150 files: 5 chunks
    killed_in_third_chunk(root, storage, home)
    assert len(table(storage / "labeled_images")) == 2 * CHUNK  # chunks 1 and 2, whole; none of chunk 3's labels
    assert len(table(storage / "mobilenet_features")) == 3 * CHUNK  # chunk 3's features were committed
    assert not (storage / "pca_model").exists()

    rest = run_graph(root, storage, CONFIG, select=FEATURE_PIPELINE)
    assert rest.success
    [event] = [e for e in rest.get_asset_materialization_events() if e.asset_key.to_user_string() == "labeled_images"]
    metadata = event.event_specific_data.materialization.metadata
    assert metadata["files_read"].value == 150 - 2 * CHUNK  # chunk 3 (half committed) and the two never started
    # The killed run left no complete screening to go on from: the tables are compared with the listing whole.
    assert metadata["planned_from"].value == "the listing and the three tables, compared whole"
    assert run_graph(root, tmp_path / "fresh", CONFIG, select=FEATURE_PIPELINE).success
    got = snapshot(storage, classification=False)
    assert_same_outputs(got, snapshot(tmp_path / "fresh", classification=False))
