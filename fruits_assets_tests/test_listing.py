"""The driver's listing: every entry under the root is a row, symlinked folders followed, errors recorded."""

import os
import socket
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from fruits_assets.spark.listing import BATCH_FILES, RAW_ARROW_SCHEMA, list_files, listing_changes, path_prefix

from .conftest import fruit_jpeg


def _rows(root: Path) -> dict[str, dict]:
    listing = list_files(str(root)).to_pandas()
    return {p.removeprefix(f"file:{root}/"): row for p, row in listing.set_index("path").iterrows()}


def test_every_entry_is_listed_whatever_its_name_and_the_unexaminable_say_why(tmp_path: Path):
    (tmp_path / "Test" / "Kiwi").mkdir(parents=True)
    (tmp_path / "Test" / "Kiwi" / "k.jpg").write_bytes(fruit_jpeg((120, 160, 60)))
    (tmp_path / "Test" / "Kiwi" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (tmp_path / "Test" / "Kiwi" / "_DSC0001.JPG").write_bytes(fruit_jpeg((120, 160, 60), seed=3))
    (tmp_path / "Test" / "Kiwi" / "clip.mov").write_bytes(b"\0\0\0\x14ftypqt  ")
    (tmp_path / "notes.txt").write_text("no label folder")
    os.symlink(tmp_path / "nowhere.jpg", tmp_path / "Test" / "Kiwi" / "ghost.jpg")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "Test" / "Kiwi" / "a.sock"))
    rows = _rows(tmp_path)
    listener.close()
    assert set(rows) == {
        f"Test/Kiwi/{n}" for n in ("k.jpg", ".DS_Store", "_DSC0001.JPG", "clip.mov", "ghost.jpg", "a.sock")
    } | {"notes.txt"}
    kiwi = rows["Test/Kiwi/k.jpg"]
    assert kiwi["size"] == (tmp_path / "Test" / "Kiwi" / "k.jpg").stat().st_size and pd.isna(kiwi["listing_error"])
    assert (kiwi["label"], kiwi["split"]) == ("Kiwi", "Test") and kiwi["stamp"].startswith(f"{int(kiwi['size'])}:")
    assert len(kiwi["stamp"].split(":")) == 4  # size, modification time, inode, change time
    assert rows["Test/Kiwi/ghost.jpg"]["listing_error"].startswith("FileNotFoundError")
    assert rows["Test/Kiwi/a.sock"]["listing_error"] == "not a regular file (a socket, a FIFO or a device)"
    assert rows["Test/Kiwi/ghost.jpg"]["stamp"].startswith("error:")  # not examined again while the error stands
    assert pd.isna(rows["notes.txt"]["label"])


def test_symlinked_folders_are_listed_under_the_link(tmp_path: Path):
    elsewhere, root = tmp_path / "elsewhere", tmp_path / "root"
    (elsewhere / "Kiwi").mkdir(parents=True)
    (elsewhere / "Kiwi" / "k.jpg").write_bytes(fruit_jpeg((120, 160, 60), seed=1))
    (root / "Test" / "Lemon").mkdir(parents=True)
    (root / "Test" / "Lemon" / "l.jpg").write_bytes(fruit_jpeg((250, 240, 60), seed=2))
    os.symlink(elsewhere, root / "Training")  # a whole split kept on another disk
    rows = _rows(root)
    assert set(rows) == {"Test/Lemon/l.jpg", "Training/Kiwi/k.jpg"}
    assert rows["Training/Kiwi/k.jpg"]["size"] == (elsewhere / "Kiwi" / "k.jpg").stat().st_size


def test_a_symlink_back_to_a_folder_above_is_a_clear_error(tmp_path: Path):
    (tmp_path / "Test" / "Lemon").mkdir(parents=True)
    (tmp_path / "Test" / "Lemon" / "l.jpg").write_bytes(fruit_jpeg((250, 240, 60), seed=2))
    os.symlink(tmp_path / "Test", tmp_path / "Test" / "Lemon" / "again")
    with pytest.raises(ValueError, match="Lemon/again links back to .*Test, a folder above it"):
        list_files(str(tmp_path))


def test_a_single_file_root_lists_that_file(tmp_path: Path):
    image = tmp_path / "one.jpg"
    image.write_bytes(fruit_jpeg((250, 240, 60), seed=2))
    assert list_files(str(image))["path"].to_pylist() == [f"file:{image}"]


def test_changes_are_new_or_restamped_paths_and_gone_paths():
    listing = pa.table({"path": ["a", "b", "c"], "stamp": ["1:1", "2:9", "3:3"]})
    known = pa.table({"path": ["a", "b", "d"], "stamp": ["1:1", "2:2", "4:4"]})
    new, gone, added = listing_changes(listing, known)
    assert new["path"].to_pylist() == ["b", "c"] and gone["path"].to_pylist() == ["d"]
    assert added == 1  # c is a new path; b only a new version of one


def test_a_copy_that_keeps_the_modification_time_is_a_new_version(tmp_path: Path):
    (tmp_path / "Kiwi").mkdir()
    image = tmp_path / "Kiwi" / "k.jpg"
    image.write_bytes(fruit_jpeg((120, 160, 60), seed=1))
    before = _rows(tmp_path)["Kiwi/k.jpg"]["stamp"]
    kept = image.stat()
    image.write_bytes(fruit_jpeg((120, 160, 60), seed=1)[::-1][::-1])  # the same size, rewritten in place
    os.utime(image, ns=(kept.st_atime_ns, kept.st_mtime_ns))  # as `cp -p` leaves it
    after = _rows(tmp_path)["Kiwi/k.jpg"]["stamp"]
    assert after.split(":")[:2] == before.split(":")[:2] and after != before  # size and time the same, ctime not


def test_every_listed_path_begins_with_its_root_s_prefix_however_the_root_is_spelt(tmp_path: Path):
    (tmp_path / "Test" / "Kiwi").mkdir(parents=True)
    (tmp_path / "Test" / "Kiwi" / "k.jpg").write_bytes(fruit_jpeg((120, 160, 60)))
    (tmp_path / "loose.jpg").write_bytes(fruit_jpeg((120, 160, 60), seed=2))
    prefix = path_prefix(str(tmp_path))
    assert prefix == path_prefix(f"file:{tmp_path}") == f"file:{tmp_path}/"
    assert all(p.startswith(prefix) for p in list_files(str(tmp_path))["path"].to_pylist())
    assert path_prefix("s3a://bucket/images") == "s3a://bucket/images/"


def test_a_listing_longer_than_a_batch_holds_every_file_once_in_path_order(tmp_path: Path):
    count = BATCH_FILES * 2 + 7  # three Arrow batches, the last one partial
    for i in range(count):
        folder = tmp_path / "Training" / f"Fruit {i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:06d}.jpg").write_bytes(b"")
    listing = list_files(str(tmp_path))
    paths = listing.column("path").to_pylist()
    assert listing.num_rows == count and len(set(paths)) == count and paths == sorted(paths)
    labels = dict(zip(paths, listing.column("label").to_pylist(), strict=True))
    assert labels[f"file:{tmp_path}/Training/Fruit 2/000005.jpg"] == "Fruit 2"
    assert listing.schema == RAW_ARROW_SCHEMA
