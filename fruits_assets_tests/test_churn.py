"""Incremental equals fresh: whatever changed in the images between runs, the next run's outputs are a fresh run's.

The store changes between two runs on the same storage root: files added, deleted,
overwritten with other bytes (one with the same size and its modification time put
back, as `cp -p` leaves it), renamed, touched; a label folder removed and another
added; broken files added and a broken one mended. The second run's outputs, asset by
asset, equal those of a fresh run on the final tree, read back without Spark.
"""

import os
import shutil
from pathlib import Path

import pytest

from .conftest import fruit_jpeg, run_graph, write_tree
from .outputs import assert_same_outputs, snapshot

COLORS = {
    "Apple Red 1": (200, 20, 30),
    "Banana 1": (240, 220, 40),
    "Kiwi 1": (120, 100, 40),
    "Lemon 1": (250, 250, 60),
}
LAYOUT = {
    "Training/Apple Red 1": 6,
    "Training/Banana 1": 6,
    "Training/Kiwi 1": 6,
    "Test/Apple Red 1": 3,
    "Test/Banana 1": 3,
    "Test/Kiwi 1": 3,
}
CONFIG = {"ops": {"screen_and_featurize": {"config": {"chunk_files": 10}}, "pca_model": {"config": {"k": 4}}}}


def first_tree(root: Path) -> None:
    write_tree(root, LAYOUT, COLORS)
    (root / "Test" / "notes.txt").write_text("not an image")
    (root / "Test" / "Banana 1" / "broken.jpg").write_bytes(fruit_jpeg(COLORS["Banana 1"], seed=50)[:700])


def churn(root: Path) -> None:
    """Every kind of change a store of public photos sees between two runs."""
    apples, test = root / "Training" / "Apple Red 1", root / "Test"
    for i in range(3):
        (apples / f"new_{i}.jpg").write_bytes(fruit_jpeg(COLORS["Apple Red 1"], seed=100 + i))
    (root / "Training" / "Banana 1" / "0_100.jpg").unlink()
    (root / "Training" / "Kiwi 1" / "1_100.jpg").write_bytes(fruit_jpeg(COLORS["Kiwi 1"], seed=99))
    (test / "Apple Red 1" / "0_100.jpg").rename(test / "Apple Red 1" / "renamed.jpg")
    touched = apples / "2_100.jpg"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 5_000_000_000))
    same_size = apples / "3_100.jpg"  # other bytes, same size, the old modification time put back
    before = same_size.stat()
    data = bytearray(same_size.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 40] = bytes(reversed(data[len(data) // 2 : len(data) // 2 + 40]))
    same_size.write_bytes(bytes(data))
    os.utime(same_size, ns=(before.st_atime_ns, before.st_mtime_ns))
    shutil.rmtree(test / "Kiwi 1")
    write_tree(root, {"Test/Lemon 1": 3, "Training/Lemon 1": 4}, COLORS)
    (apples / "cut.jpg").write_bytes(fruit_jpeg(COLORS["Apple Red 1"], seed=7)[:600])
    (apples / "empty.jpg").write_bytes(b"")
    (test / "Banana 1" / "broken.jpg").write_bytes(fruit_jpeg(COLORS["Banana 1"], seed=51))  # mended


def photos(root: Path) -> list[Path]:
    return sorted(root.glob("Test/*/*.jpg"))[:6]


@pytest.mark.spark
def test_a_rerun_after_every_kind_of_change_equals_a_fresh_run_asset_by_asset(tmp_path):
    root, storage = tmp_path / "images", tmp_path / "storage"
    first_tree(root)
    assert run_graph(root, storage, CONFIG).success
    churn(root)
    rerun = run_graph(root, storage, CONFIG)
    assert rerun.success
    # Read again: 3 new, 1 overwritten, 1 renamed, 1 touched, 1 of the same size, 7 in the new label, 2 broken
    # added, 1 mended. Nothing else.
    read = _metadata(rerun, "mobilenet_features")
    assert read["files_read"] == 17
    assert read["planned_from"].startswith("the changes to raw_images since version 0")  # not the tables compared
    fresh_storage = tmp_path / "fresh"
    assert run_graph(root, fresh_storage, CONFIG).success
    assert_same_outputs(snapshot(storage, photos(root)), snapshot(fresh_storage, photos(root)))
    rejected = snapshot(storage)["rejected_images"].set_index("path")["reason"].to_dict()
    assert rejected == {
        f"file:{root}/Test/notes.txt": "not_an_image",
        f"file:{root}/Training/Apple Red 1/cut.jpg": "truncated",
        f"file:{root}/Training/Apple Red 1/empty.jpg": "empty",
    }


def _metadata(result, asset: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return {k: v.value for k, v in event.event_specific_data.materialization.metadata.items()}
