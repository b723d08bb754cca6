"""The driver's listing of image files agrees with Spark's, symlinked folders included."""

import os
from pathlib import Path

import pytest

from fruits_assets.spark.listing import list_image_files
from fruits_assets.spark.reading import binary_files, hadoop_path
from fruits_assets_tests.conftest import fruit_jpeg


def _spark_listing(spark, root: Path) -> set[str]:
    return {hadoop_path(uri) for uri in binary_files(spark, str(root)).inputFiles()}


def test_symlinked_folders_are_listed_under_the_link_as_spark_reads_them(spark, tmp_path: Path):
    elsewhere, root = tmp_path / "elsewhere", tmp_path / "root"
    (elsewhere / "Kiwi").mkdir(parents=True)
    (elsewhere / "Kiwi" / "k.jpg").write_bytes(fruit_jpeg((120, 160, 60), seed=1))
    (root / "Test" / "Lemon").mkdir(parents=True)
    (root / "Test" / "Lemon" / "l.jpg").write_bytes(fruit_jpeg((250, 240, 60), seed=2))
    (elsewhere / "Kiwi" / "_DSC0001.JPG").write_bytes(fruit_jpeg((120, 160, 60), seed=3))
    os.symlink(elsewhere, root / "Training")  # a whole split kept on another disk
    listed = list_image_files(str(root))
    camera = f"file:{root}/Training/Kiwi/_DSC0001.JPG"
    assert set(listed) == {f"file:{root}/Test/Lemon/l.jpg", f"file:{root}/Training/Kiwi/k.jpg", camera}
    # Spark's listing skips `_` names; read_image_files reads what the driver lists beyond it.
    assert _spark_listing(spark, root) == set(listed) - {camera}
    assert listed[f"file:{root}/Training/Kiwi/k.jpg"] == (elsewhere / "Kiwi" / "k.jpg").stat().st_size


def test_a_symlink_back_to_a_folder_above_is_a_clear_error(tmp_path: Path):
    (tmp_path / "Test" / "Lemon").mkdir(parents=True)
    (tmp_path / "Test" / "Lemon" / "l.jpg").write_bytes(fruit_jpeg((250, 240, 60), seed=2))
    os.symlink(tmp_path / "Test", tmp_path / "Test" / "Lemon" / "again")
    with pytest.raises(ValueError, match="Lemon/again links back to .*Test, a folder above it"):
        list_image_files(str(tmp_path))


def test_a_single_file_root_lists_that_file(tmp_path: Path):
    image = tmp_path / "one.jpg"
    image.write_bytes(fruit_jpeg((250, 240, 60), seed=2))
    assert list_image_files(str(image)) == {f"file:{image}": image.stat().st_size}
