"""The pipeline runs itself on a local images root: the real `dg dev` (webserver and daemon), the project's
dagster.yaml, photos dropped into the root and deleted from it.

The `new_photos` sensor lists the root (stat only) and compares it with `raw_images`;
what changed starts a run that reads only that; photos dropped while a run works wait
for the next run, queued behind it (the pool of the storage root), never beside it;
with nothing new, no run is launched; a deleted photo leaves the tables through a
sensor run; the automation conditions carry each change through the PCA, the CSV, the
classifier and the phone's model.
"""

import threading
import time

import pandas as pd
import pytest
from dagster import AssetKey, DagsterRunStatus

from .conftest import fruit_jpeg, run_graph, table, write_tree
from .daemon import ACTIVE, DONE, dagster_dev, materialized, runs, settled, status, wait_for, writing_runs

COLORS = {"Apple Red 1": (200, 20, 30), "Banana 1": (240, 220, 40), "Kiwi 1": (120, 100, 40)}
TICK = 3  # seconds between the sensor's ticks, and the automation's


def drop(root, work, folder: str, count: int, color: tuple[int, int, int]) -> list:
    """`count` new photos in a new label folder, moved under the root in one rename: a sensor sees all or none."""
    staging = work / "staging" / folder
    staging.mkdir(parents=True)
    for i in range(count):
        (staging / f"{i}.jpg").write_bytes(fruit_jpeg(color, seed=2000 + i))
    (root / folder).parent.mkdir(parents=True, exist_ok=True)
    staging.rename(root / folder)
    return sorted((root / folder).iterdir())


class QueueWatch(threading.Thread):
    """Samples the instance's runs all along: never two that write active at once on the one storage root (the
    hourly freshness checks only read, take no lock, and may run beside one)."""

    def __init__(self, instance) -> None:
        super().__init__(daemon=True)
        self.instance, self.stop, self.most, self.queued_behind = instance, threading.Event(), 0, 0

    def run(self) -> None:
        while not self.stop.wait(0.2):
            current = writing_runs(self.instance)
            active = [r for r in current if r.status in ACTIVE]
            self.most = max(self.most, len(active))
            if active and any(r.status == DagsterRunStatus.QUEUED for r in current):
                self.queued_behind += 1


def _listed(instance, run) -> bool:
    try:
        return materialized(instance, run, "raw_images")["files"] > 0
    except AssertionError:
        return False


def _materializations(instance, asset: str) -> list:
    return instance.fetch_materializations(AssetKey(asset), limit=1000).records


def listing_runs(instance) -> list:
    return runs(instance, **{"fruits/reason": "listing"})


@pytest.mark.spark
def test_photos_dropped_into_a_local_root_flow_through_queued_sensor_and_automation_runs(tmp_path):
    root, storage = tmp_path / "images", tmp_path / "storage"
    write_tree(root, {"Training/Apple Red 1": 4, "Training/Banana 1": 4, "Training/Kiwi 1": 4}, COLORS)
    write_tree(root, {"Test/Apple Red 1": 2, "Test/Banana 1": 2, "Test/Kiwi 1": 2}, COLORS)
    # The storage as an earlier run left it (a run from nothing, by the sensor's first tick, is the UI test's).
    assert run_graph(root, storage).success and (storage / "phone_model" / "current.json").exists()
    env = {"FRUITS_IMAGES": str(root), "FRUITS_STORAGE": str(storage)}
    env |= {"FRUITS_SENSOR_SECONDS": str(TICK), "FRUITS_AUTOMATION_SECONDS": str(TICK)}
    log = tmp_path / "dg_dev.log"
    with dagster_dev(tmp_path / "home", env, log) as (_, instance):
        watch = QueueWatch(instance)
        watch.start()
        # The sensor's first tick lists the root in full: every photo is known, no run.
        wait_for("the sensor's first tick", lambda: "Sensor new_photos skipped: nothing new" in log.read_text(), 120)
        assert not writing_runs(instance)

        dropped, landed, before = time.monotonic(), time.time(), len(listing_runs(instance))
        hundred = drop(root, tmp_path, "Training/Mango 1", 100, (250, 180, 40))
        first = wait_for("a run for the 100 photos", lambda: listing_runs(instance)[before:], timeout=60)[0]
        started = wait_for("it starting", lambda: status(instance, first) in ACTIVE + DONE, timeout=60)
        assert started and time.monotonic() - dropped < 60
        # Once the first run has listed the root, while it featurizes, 30 more photos arrive.
        wait_for("the first run's listing", lambda: _listed(instance, first), timeout=120)
        thirty = drop(root, tmp_path, "Test/Mango 1", 30, (250, 180, 40))
        second = wait_for("a run for the 30", lambda: listing_runs(instance)[before + 1 :], timeout=60)[0]
        wait_for("both done", lambda: status(instance, second) == DagsterRunStatus.SUCCESS, timeout=400, every=1)
        assert status(instance, first) == DagsterRunStatus.SUCCESS
        assert first.tags["fruits/new"] == "100"
        assert materialized(instance, first, "labeled_images")["files_read"] == 100
        assert materialized(instance, second, "labeled_images")["files_read"] == 30

        wait_for("the automation to settle", lambda: settled(instance, 3 * TICK), timeout=600, every=2)
        stored = [r.timestamp for r in _materializations(instance, "mobilenet_features") if r.run_id == first.run_id]
        phones = [r.timestamp for r in _materializations(instance, "phone_model") if r.timestamp > min(stored)]
        assert phones, "no phone model was made after the photos' features"
        print(
            f"latency on this machine, from 100 photos landing: their features stored {min(stored) - landed:.0f} s, "
            f"a new phone model holding them {min(phones) - landed:.0f} s (sensor and automation ticks of {TICK} s)"
        )
        quiet = len(writing_runs(instance))
        time.sleep(5 * TICK)  # several ticks with nothing new
        assert len(writing_runs(instance)) == quiet, "a run was launched with nothing new"

        gone = hundred[0]
        gone.unlink()
        count = len(listing_runs(instance))
        deletion = wait_for("a run for the deletion", lambda: listing_runs(instance)[count:], timeout=60)[0]
        assert deletion.tags["fruits/gone"] == "1"
        wait_for(
            "the deletion to flow through",
            lambda: settled(instance, 3 * TICK) and len(pd.read_csv(storage / "pca_features.csv")) == 18 + 130 - 1,
            timeout=600,
            every=2,
        )
        watch.stop.set()

    path = f"file:{gone}"
    for name in ("raw_images", "labeled_images", "mobilenet_features", "pca_features"):
        assert path not in set(table(storage / name)["path"]), name
    assert f"file:{thirty[0]}" in set(pd.read_csv(storage / "pca_features.csv")["path"])
    assert watch.most == 1, "two runs were active at once"
    assert watch.queued_behind > 0, "no run ever waited in the queue behind another"
