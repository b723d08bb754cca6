"""Odd, broken and hostile files among good ones: every image featurized or rejected with its reason."""

import io
import os
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fruits_assets.definitions import FEATURE_PIPELINE
from fruits_assets.vision.reasons import Reason

from .conftest import fruit_jpeg, run_graph, table, write_tree
from .formats import PHOTO_FORMATS, STRAYS, animated_gif, as_png, photo, stray
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


# Every photo format, twice per label folder, each beside its twin: the same image decoded by Pillow and saved as PNG.
FORMAT_LABELS = {"Formats/Kiwi 1": (120, 160, 60), "Formats/Plum 1": (110, 40, 90)}


def _format_files() -> tuple[dict[str, bytes], list[tuple[str, str]]]:
    """The files, and the (photo, twin) pairs whose features must agree."""
    files, pairs = {}, []
    for folder, color in FORMAT_LABELS.items():
        photos = {
            f"{folder}/{copy} {ext}.{ext}": photo(ext, color, 10 * i + copy)
            for i, ext in enumerate(sorted(PHOTO_FORMATS))
            for copy in range(2)
        }
        photos[f"{folder}/animated.gif"] = animated_gif(color)
        for path, content in photos.items():
            twin = path.rsplit(".", 1)[0] + " twin.png"
            files |= {path: content, twin: as_png(content)}
            pairs.append((path, twin))
    return files, pairs


FORMAT_FILES, FORMAT_PAIRS = _format_files()
STRAY_PATHS = {f"Formats/Kiwi 1/{name}": reason for name, (_, reason) in STRAYS.items()}


def build_tree(root: Path) -> None:
    write_tree(root, LAYOUT, COLORS)
    files = {relative: make() for relative, make in ODD_BUT_FINE.items()}
    files |= {relative: make() for relative, (make, _) in BROKEN.items()}
    files |= FORMAT_FILES | {path: stray(path.rsplit("/", 1)[1]) for path in STRAY_PATHS}
    for relative, content in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(content)
    os.symlink(root / "nowhere.jpg", root / "Test" / "Banana 1" / "ghost.jpg")  # a dangling link
    for name in ("a.sock",):  # an entry no one can read: open() fails on a socket
        SOCKETS.append(socket.socket(socket.AF_UNIX))
        SOCKETS[-1].bind(str(root / "Test" / "Banana 1" / name))


SOCKETS: list[socket.socket] = []
UNREADABLE = {"Test/Banana 1/ghost.jpg": "FileNotFoundError", "Test/Banana 1/a.sock": "not a regular file"}


def materialize(root: Path, storage: Path):
    """The feature pipeline: a classifier trained on a tree of odd files has nothing to show here."""
    result = run_graph(root, storage, select=FEATURE_PIPELINE)
    assert result.success
    return result


def metadata_of(result, asset: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return {k: v.value for k, v in event.event_specific_data.materialization.metadata.items()}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root, storage = tmp_path_factory.mktemp("images"), tmp_path_factory.mktemp("storage")
    build_tree(root)
    yield root, storage, materialize(root, storage)
    for listener in SOCKETS:
        listener.close()


def _relative(paths: pd.Series, root: Path) -> list[str]:
    return sorted(p.split(f"{root.as_posix()}/", 1)[1] for p in paths)


def test_every_entry_that_is_not_featurized_is_rejected_with_its_reason(first_run):
    root, storage, _ = first_run
    rejected = table(storage / "rejected_images")
    rejected["relative"] = [p.split(f"{root.as_posix()}/", 1)[1] for p in rejected["path"]]
    reasons = dict(zip(rejected["relative"], rejected["reason"], strict=True))
    expected = {path: reason for path, (_, reason) in BROKEN.items()} | STRAY_PATHS
    expected |= {path: Reason.UNREADABLE for path in UNREADABLE}
    assert reasons == expected
    assert rejected["message"].str.len().gt(0).all()
    messages = rejected.set_index("relative")["message"]
    assert "60000x60000" in messages["Training/Banana 1/bomb.png"]
    assert all(cause in messages[path] for path, cause in UNREADABLE.items())
    assert "QuickTime video" in messages["Formats/Kiwi 1/clip.mov"] and "PDF" in messages["Formats/Kiwi 1/scan.pdf"]


def test_every_decodable_image_is_featurized_like_its_twin_and_the_counts_reconcile(first_run):
    root, storage, result = first_run
    features = table(storage / "mobilenet_features")
    good = [f"{folder}/{i}_100.jpg" for folder, n in LAYOUT.items() for i in range(n)]
    assert _relative(features["path"], root) == sorted(good + list(ODD_BUT_FINE) + list(FORMAT_FILES))
    assert np.isfinite(np.stack(features["features"].to_numpy())).all()
    by_path = {
        p.split(f"{root.as_posix()}/", 1)[1]: f for p, f in zip(features["path"], features["features"], strict=True)
    }
    assert len(FORMAT_PAIRS) == len(FORMAT_LABELS) * (2 * len(PHOTO_FORMATS) + 1)
    assert max(np.abs(by_path[a] - by_path[b]).max() for a, b in FORMAT_PAIRS) <= 1e-3
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert all(e.passed for name, e in checks.items() if name != "explained_variance_reaches_target")
    accounted = {k: v.value for k, v in checks["every_image_accounted_for"].metadata.items()}
    listed = len(good) + len(ODD_BUT_FINE) + len(BROKEN) + len(FORMAT_FILES) + len(STRAY_PATHS) + len(UNREADABLE)
    assert accounted["raw_images"] == listed
    assert accounted["mobilenet_features"] == len(good) + len(ODD_BUT_FINE) + len(FORMAT_FILES)
    assert accounted["rejected_images"] == len(BROKEN) + len(STRAY_PATHS) + len(UNREADABLE)
    reasons = metadata_of(result, "rejected_images")["new_images_per_reason"]
    expected = pd.Series(
        [r for _, r in BROKEN.values()] + list(STRAY_PATHS.values()) + ["unreadable"] * 2
    ).value_counts()
    assert {r.data["reason"]: r.data["images"] for r in reasons.records} == expected.to_dict()


def test_awkward_deep_paths_keep_their_label_and_are_quoted_in_the_csv(first_run):
    root, storage, _ = first_run
    csv = pd.read_csv(storage / "pca_features.csv", keep_default_na=False)
    deep = csv[csv["path"].str.endswith("ü 1.jpg")]
    assert deep[["label", "split"]].values.tolist() == [["Pêche ünd 桃 1", "Test"]]
    assert f"{root.as_posix()}/deep/er/still/Test/Pêche ünd 桃 1/ü 1.jpg" in deep["path"].iloc[0]


def test_a_second_run_reads_nothing_and_a_fresh_one_reproduces_the_csv_byte_for_byte(first_run, tmp_path):
    root, storage, first = first_run
    again = materialize(root, storage)
    features = metadata_of(again, "mobilenet_features")
    assert (features["files_read"], features["images"], features["unchanged"]) == (0, 0, True)
    assert features["files_unchanged"] == metadata_of(first, "mobilenet_features")["files_read"]
    assert metadata_of(again, "pca_features")["unchanged"] and metadata_of(again, "pca_features_csv")["unchanged"]
    fresh = materialize(root, tmp_path / "fresh storage")  # recomputed from scratch elsewhere
    assert (storage / "pca_features.csv").read_bytes() == (tmp_path / "fresh storage" / "pca_features.csv").read_bytes()
    assert metadata_of(fresh, "mobilenet_features")["images"] == metadata_of(first, "mobilenet_features")["images"]


def test_only_new_and_changed_files_are_read_and_the_model_sees_only_them(tmp_path):
    root, storage = tmp_path / "images", tmp_path / "storage"
    write_tree(root, {"Test/Apple Red 1": 4, "Test/Banana 1": 4}, COLORS)
    materialize(root, storage)
    before = table(storage / "mobilenet_features").set_index("path")

    apples = root / "Test" / "Apple Red 1"
    (apples / "0_100.jpg").rename(apples / "renamed.jpg")  # a new path: read again, the same features
    (apples / "1_100.jpg").write_bytes(fruit_jpeg((180, 10, 10), seed=99))  # changed bytes: recomputed
    (apples / "2_100.jpg").unlink()  # deleted: leaves the outputs
    (root / "Test" / "Banana 1" / "new.jpg").write_bytes(fruit_jpeg((240, 220, 40), seed=42))  # new
    result = materialize(root, storage)

    changes = metadata_of(result, "mobilenet_features")
    assert (changes["files_read"], changes["files_unchanged"], changes["files_removed"]) == (3, 5, 2)
    assert changes["images"] == 3  # the model saw three images, not eight
    assert (changes["inserted"], changes["updated"], changes["deleted"]) == (2, 1, 2)
    after = table(storage / "mobilenet_features").set_index("path")
    prefix = f"file:{apples.as_posix()}/"
    assert len(after) == 8 and prefix + "2_100.jpg" not in after.index and prefix + "0_100.jpg" not in after.index
    np.testing.assert_allclose(
        after.loc[prefix + "renamed.jpg", "features"], before.loc[prefix + "0_100.jpg", "features"], atol=1e-6
    )
    assert (
        np.abs(after.loc[prefix + "1_100.jpg", "features"] - before.loc[prefix + "1_100.jpg", "features"]).max() > 1e-3
    )
    assert len(pd.read_csv(storage / "pca_features.csv")) == 8


def test_a_file_gone_between_listing_and_reading_is_rejected_as_unreadable(tmp_path):
    root, storage = tmp_path / "images", tmp_path / "storage"
    write_tree(root, {"Test/Apple Red 1": 3}, COLORS)
    assert run_graph(root, storage, select="raw_images").success
    (root / "Test" / "Apple Red 1" / "1_100.jpg").unlink()  # listed, then gone before anything read it
    result = run_graph(root, storage, select="key:labeled_images+ or key:rejected_images")
    assert result.success
    rejected = table(storage / "rejected_images")
    assert rejected["reason"].tolist() == ["unreadable"] and "FileNotFoundError" in rejected["message"].iloc[0]
    assert len(table(storage / "mobilenet_features")) == 2


def test_a_root_whose_files_are_all_rejected_is_a_clear_error(tmp_path):
    (tmp_path / "images" / "Kiwi 1").mkdir(parents=True)
    (tmp_path / "images" / "Kiwi 1" / "broken.jpg").write_bytes(b"no image here")
    result = run_graph(tmp_path / "images", tmp_path / "storage", raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert failure.step_key == "pca_model"
    assert "every image was rejected (see the rejected_images asset)" in str(failure.step_failure_data.error)
    assert table(tmp_path / "storage" / "rejected_images")["reason"].tolist() == [Reason.NOT_AN_IMAGE]


@pytest.mark.spark
def test_paths_given_by_hand_must_be_spelt_as_the_listing_spells_them(tmp_path: Path):
    """A partial listing compares paths by their exact string: `/root/a.jpg` for a stored `file:/root/a.jpg` would
    be a new path, a second row. It is refused, naming the setting; the listing's spelling updates the one row."""
    root, storage = tmp_path / "images", tmp_path / "storage"
    photos = write_tree(root, {"Training/Kiwi 1": 2}, {"Kiwi 1": (120, 100, 40)})
    assert run_graph(root, storage, select="raw_images").success

    def stamps() -> dict[str, str]:
        rows = table(storage / "raw_images")
        return dict(zip(rows["path"], rows["stamp"], strict=True))

    before = stamps()
    photos[0].write_bytes(fruit_jpeg((120, 100, 40), seed=9))

    def only(path: str) -> dict:
        return {"ops": {"raw_images": {"config": {"paths": [path]}}}}

    plain = run_graph(root, storage, only(str(photos[0])), raise_on_error=False, select="raw_images")
    assert not plain.success
    error = str(next(e for e in plain.all_events if e.is_step_failure).step_failure_data.error)
    assert "ops.raw_images.config.paths" in error and f"file:{root}/" in error
    assert stamps() == before

    assert run_graph(root, storage, only(f"file:{photos[0]}"), select="raw_images").success
    after = stamps()
    assert sorted(after) == sorted(before) == sorted(f"file:{p}" for p in photos)  # one row per file
    assert after[f"file:{photos[0]}"] != before[f"file:{photos[0]}"]
    assert after[f"file:{photos[1]}"] == before[f"file:{photos[1]}"]
