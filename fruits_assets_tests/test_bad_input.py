"""Odd, broken and hostile files among good ones: every image featurized or rejected with its reason."""

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fruits_assets.vision.reasons import Reason

from .conftest import fruit_jpeg, run_graph, write_tree
from .test_preprocess import corrupted, encode, png_header_only

LAYOUT = {"Training/Apple Red 1": 5, "Training/Banana 1": 5, "Test/Apple Red 1": 3, "Test/Banana 1": 3}
COLORS = {"Apple Red 1": (200, 20, 30), "Banana 1": (240, 220, 40), "Pêche ünd 桃 1": (250, 150, 120)}


def _banana() -> Image.Image:
    return Image.open(io.BytesIO(fruit_jpeg((240, 220, 40), seed=5)))


def _rgba_png() -> bytes:
    pixels = np.zeros((60, 60, 4), dtype=np.uint8)
    pixels[10:50, 10:50] = (240, 220, 40, 255)
    return encode(Image.fromarray(pixels, "RGBA"))


def _rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 8
    return encode(Image.open(io.BytesIO(fruit_jpeg((200, 20, 30), seed=7, size=80))), "JPEG", exif=exif.tobytes())


def _sixteen_bit_png() -> bytes:
    return encode(Image.fromarray((np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)))


# Files that decode, whatever their mode or extension says: featurized.
ODD_BUT_FINE = {
    "Test/Banana 1/cmyk.jpg": lambda: encode(_banana().convert("CMYK"), "JPEG"),
    "Test/Banana 1/gray.jpg": lambda: encode(_banana().convert("L"), "JPEG"),
    "Test/Banana 1/alpha.png": _rgba_png,
    "Test/Banana 1/sixteen bit.png": _sixteen_bit_png,
    "Test/Apple Red 1/really a png.jpg": lambda: fruit_jpeg((200, 20, 30), seed=3, fmt="PNG"),
    "Test/Apple Red 1/rotated.JPEG": _rotated_jpeg,
    "deep/er/still/Test/Pêche ünd 桃 1/ü 1.jpg": lambda: fruit_jpeg((250, 150, 120), seed=1),
    "Test/Banana 1/_DSC0001.JPG": lambda: fruit_jpeg((240, 220, 40), seed=11),  # Spark's own listing skips _names
    "Test/Banana 1/.also hidden.jpg": lambda: fruit_jpeg((240, 220, 40), seed=12),
}
# Files that do not: rejected, each with its reason.
BROKEN = {
    "Test/Banana 1/empty.jpg": (lambda: b"", Reason.EMPTY),
    "Test/Banana 1/notes.png": (lambda: b"shopping list: bananas", Reason.NOT_AN_IMAGE),
    "Training/Apple Red 1/cut short.jpg": (lambda: fruit_jpeg((200, 20, 30))[:1200], Reason.TRUNCATED),
    "Training/Banana 1/damaged.png": (lambda: corrupted(fruit_jpeg((240, 220, 40), fmt="PNG"), at=100), Reason.CORRUPT),
    "Training/Banana 1/bomb.png": (lambda: png_header_only(60_000, 60_000), Reason.TOO_LARGE),
    "at the root.jpg": (lambda: fruit_jpeg((1, 2, 3)), "unlabeled"),
}


def build_tree(root: Path) -> None:
    write_tree(root, LAYOUT, COLORS)
    for relative, make in ODD_BUT_FINE.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(make())
    for relative, (make, _) in BROKEN.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(make())


def materialize(root: Path, storage: Path):
    result = run_graph(root, storage)
    assert result.success
    return result


def metadata_of(result, asset: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return {k: v.value for k, v in event.event_specific_data.materialization.metadata.items()}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root, storage = tmp_path_factory.mktemp("images"), tmp_path_factory.mktemp("storage")
    build_tree(root)
    return root, storage, materialize(root, storage)


def _relative(paths: pd.Series, root: Path) -> list[str]:
    return sorted(p.split(f"{root.as_posix()}/", 1)[1] for p in paths)


def test_every_broken_file_is_rejected_with_its_reason(first_run):
    root, storage, _ = first_run
    rejected = pq.read_table(storage / "rejected_images").to_pandas()
    rejected["relative"] = [p.split(f"{root.as_posix()}/", 1)[1] for p in rejected["path"]]
    assert dict(zip(rejected["relative"], rejected["reason"], strict=True)) == {
        path: reason for path, (_, reason) in BROKEN.items()
    }
    assert rejected["message"].str.len().gt(0).all()
    bomb = rejected.set_index("relative").loc["Training/Banana 1/bomb.png"]
    assert "60000x60000" in bomb["message"]


def test_everything_that_decodes_is_featurized_and_the_counts_reconcile(first_run):
    root, storage, result = first_run
    features = pq.read_table(storage / "mobilenet_features").to_pandas()
    good = [f"{folder}/{i}_100.jpg" for folder, n in LAYOUT.items() for i in range(n)]
    assert _relative(features["path"], root) == sorted(good + list(ODD_BUT_FINE))
    assert np.isfinite(np.stack(features["features"].to_numpy())).all()
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert all(e.passed for name, e in checks.items() if name != "explained_variance_reaches_target")
    accounted = checks["every_image_accounted_for"].metadata
    assert accounted["raw_images"].value == len(good) + len(ODD_BUT_FINE) + len(BROKEN)
    assert accounted["mobilenet_features"].value == len(good) + len(ODD_BUT_FINE)
    assert accounted["rejected_images"].value == len(BROKEN)
    reasons = metadata_of(result, "rejected_images")["images_per_reason"]
    assert {r.data["reason"]: r.data["images"] for r in reasons.records} == {r: 1 for _, r in BROKEN.values()}


def test_awkward_deep_paths_keep_their_label_and_are_quoted_in_the_csv(first_run):
    root, storage, _ = first_run
    table = pd.read_csv(storage / "pca_features.csv", keep_default_na=False)
    deep = table[table["path"].str.endswith("ü 1.jpg")]
    assert deep[["label", "split"]].values.tolist() == [["Pêche ünd 桃 1", "Test"]]
    assert f"{root.as_posix()}/deep/er/still/Test/Pêche ünd 桃 1/ü 1.jpg" in deep["path"].iloc[0]


def test_a_second_run_reuses_features_and_reproduces_the_csv_byte_for_byte(first_run, tmp_path):
    root, storage, first = first_run
    again = materialize(root, storage)
    assert {k: metadata_of(again, "mobilenet_features")[k] for k in ("new", "reused", "removed")} == {
        "new": 0,
        "reused": metadata_of(first, "mobilenet_features")["rows"],
        "removed": 0,
    }
    fresh = materialize(root, tmp_path / "fresh storage")  # recomputed from scratch elsewhere
    csv = (storage / "pca_features.csv").read_bytes()
    assert csv == (tmp_path / "fresh storage" / "pca_features.csv").read_bytes()
    assert metadata_of(fresh, "mobilenet_features")["new"] == metadata_of(first, "mobilenet_features")["rows"]


def test_only_new_and_changed_images_are_featurized(tmp_path):
    root, storage = tmp_path / "images", tmp_path / "storage"
    write_tree(root, {"Test/Apple Red 1": 4, "Test/Banana 1": 4}, COLORS)
    materialize(root, storage)
    before = pq.read_table(storage / "mobilenet_features").to_pandas().set_index("path")

    apples = root / "Test" / "Apple Red 1"
    (apples / "0_100.jpg").rename(apples / "renamed.jpg")  # same bytes, new name: reused
    (apples / "1_100.jpg").write_bytes(fruit_jpeg((180, 10, 10), seed=99))  # changed bytes: recomputed
    (apples / "2_100.jpg").unlink()  # deleted: leaves the outputs
    shutil.copy(apples / "3_100.jpg", apples / "copy of 3.jpg")  # known bytes under a new name: reused
    (root / "Test" / "Banana 1" / "new.jpg").write_bytes(fruit_jpeg((240, 220, 40), seed=42))  # new
    result = materialize(root, storage)

    changes = metadata_of(result, "mobilenet_features")
    assert {k: changes[k] for k in ("new", "reused", "removed")} == {"new": 2, "reused": 7, "removed": 2}
    [observation] = [e for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    assert observation.event_specific_data.asset_observation.metadata["images"].value == 2  # the model saw two
    after = pq.read_table(storage / "mobilenet_features").to_pandas().set_index("path")
    prefix = f"{apples.as_posix()}/"
    assert len(after) == 9 and not any(p.endswith(prefix + "2_100.jpg") for p in after.index)
    renamed = [p for p in after.index if p.endswith(prefix + "renamed.jpg")]
    original = [p for p in before.index if p.endswith(prefix + "0_100.jpg")]
    np.testing.assert_array_equal(after.loc[renamed[0], "features"], before.loc[original[0], "features"])
    changed = [p for p in after.index if p.endswith(prefix + "1_100.jpg")][0]
    assert np.abs(after.loc[changed, "features"] - before.loc[changed, "features"]).max() > 1e-3
    assert len(pd.read_csv(storage / "pca_features.csv")) == 9


def test_a_root_whose_images_are_all_broken_is_a_clear_error(tmp_path):
    (tmp_path / "images" / "Kiwi 1").mkdir(parents=True)
    (tmp_path / "images" / "Kiwi 1" / "broken.jpg").write_bytes(b"no image here")
    result = run_graph(tmp_path / "images", tmp_path / "storage", raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert failure.step_key == "pca_model"
    assert "every image was rejected (see the rejected_images asset)" in str(failure.step_failure_data.error)
    rejected = pq.read_table(tmp_path / "storage" / "rejected_images").to_pandas()
    assert rejected["reason"].tolist() == [Reason.NOT_AN_IMAGE]
