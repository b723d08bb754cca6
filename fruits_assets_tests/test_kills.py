"""Every kill converges: a rerun killed (SIGKILL, no clean-up) right after any commit point, then the next run,
equals a fresh run on the same images.

One storage root is made by a first run; the images then change (`test_churn.churn`).
For each commit point in turn, a copy of that root is rerun as a user runs it, with
`FRUITS_PAUSE_AFTER_COMMIT` naming the point: the run stops right after committing
there, and the test kills its whole process group. For a point in a later step, the
copy has the steps before it already brought up to date by an earlier run: the rerun
decides from their logs that they have nothing to do, and the storage at the kill is
what a run killed there leaves, without paying for the steps before it each time.
The next run on that root must leave exactly what a fresh run on the final images
leaves, asset by asset. Up to the
CSV, the runs are of the feature pipeline (images to the CSV) and compare its outputs;
at the classifier's and the phone's model, of the whole graph and every output.
"""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from fruits_assets.definitions import FEATURE_PIPELINE
from fruits_assets.settings import COMMIT_POINTS

from .conftest import materialize_command, run_graph, table
from .outputs import assert_same_outputs, snapshot
from .test_churn import CONFIG, churn, first_tree, photos

# The steps whose commit points come after the first step's, and what a run must have done before them.
STEPS_BEFORE = {
    "pca_model": "group:images or group:features",
    "pca_features": "group:images or group:features or key:pca_model",
    "fruit_classifier": FEATURE_PIPELINE,
    "phone_model": f"{FEATURE_PIPELINE} or key:fruit_classifier",
}
STEP_OF = {"pca_features_csv": "pca_features"}


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """The images after the change, for each step the root a rerun starts from (the first run's, then with each step
    before it brought up to date), and a fresh run's outputs on the final images."""
    work = tmp_path_factory.mktemp("kills")
    root, before = work / "images", work / "before"
    first_tree(root)
    assert run_graph(root, before, CONFIG).success
    churn(root)
    starts, previous = {}, before
    for step, done in STEPS_BEFORE.items():
        starts[step] = work / f"before_{step}"
        shutil.copytree(previous, starts[step])
        ops = {op: config for op, config in CONFIG["ops"].items() if op != step}  # the config of the ops it runs
        assert run_graph(root, starts[step], {"ops": ops}, select=done).success
        previous = starts[step]
    assert run_graph(root, work / "fresh", CONFIG).success
    return root, before, starts, snapshot(work / "fresh", photos(root))


def marker(storage: Path, point: str) -> object:
    """What changes when `point` commits: a table's version, a model's current folder, a file's bytes."""
    if point in ("raw_images", "mobilenet_features", "labeled_images", "rejected_images", "pca_features"):
        from deltalake import DeltaTable

        return DeltaTable(str(storage / point)).version()
    if point in ("pca_model", "fruit_classifier", "phone_model"):
        return json.loads((storage / point / "current.json").read_text())["folder"]
    return (storage / {"class_index": "class_index.json", "pca_features_csv": "pca_features.csv"}[point]).read_bytes()


CLASSIFICATION_POINTS = ("fruit_classifier", "phone_model")
CLASSIFICATION_KEYS = ("classifier", "evaluation", "phone", "phone_labels")


def selection(point: str) -> str:
    return "*" if point in CLASSIFICATION_POINTS else FEATURE_PIPELINE


def killed_after(root: Path, storage: Path, point: str, work: Path) -> None:
    """A rerun from the shell, paused right after committing `point`, then killed with its whole process group."""
    env = {
        **os.environ,
        "FRUITS_IMAGES": str(root),
        "FRUITS_STORAGE": str(storage),
        "DAGSTER_HOME": str(work),
        "FRUITS_PAUSE_AFTER_COMMIT": point,
    }
    log = work / f"{point}.log"
    with log.open("w") as out:
        run = subprocess.Popen(
            [*materialize_command(selection(point)), "--config-json", json.dumps(CONFIG)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 600
    while f"paused after committing {point}" not in log.read_text():
        assert run.poll() is None, log.read_text()[-4000:]
        assert time.monotonic() < deadline, f"the run never reached {point}"
        time.sleep(0.2)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait(timeout=60)


@pytest.mark.spark
@pytest.mark.parametrize("point", COMMIT_POINTS)
def test_a_rerun_killed_right_after_a_commit_point_is_repaired_by_the_next_run(stores, point, tmp_path):
    root, first, starts, fresh = stores
    before = starts.get(STEP_OF.get(point, point), first)
    storage = tmp_path / "storage"
    shutil.copytree(before, storage)
    killed_after(root, storage, point, tmp_path)
    assert marker(storage, point) != marker(before, point), f"the kill came before {point} committed"
    if point != COMMIT_POINTS[-1]:
        following = COMMIT_POINTS[COMMIT_POINTS.index(point) + 1]
        assert marker(storage, following) == marker(before, following), f"the kill came after {following}"
    assert run_graph(root, storage, CONFIG, select=selection(point)).success
    whole = point in CLASSIFICATION_POINTS
    expected = fresh if whole else {k: v for k, v in fresh.items() if k not in CLASSIFICATION_KEYS}
    assert_same_outputs(snapshot(storage, photos(root), classification=whole), expected)
    assert len(table(storage / "raw_images")) == len(fresh["raw_images"])
