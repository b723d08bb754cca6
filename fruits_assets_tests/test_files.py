"""Outputs replaced atomically through Hadoop's FileSystem, and what a killed write leaves behind."""

from pathlib import Path

import pytest

from fruits_assets.spark.files import RETIRED, STAGING, recover_interrupted, replace_atomically, write_parquet


def _write_frame(spark, dest: Path, values: list[int]) -> None:
    write_parquet(spark, spark.createDataFrame([(v,) for v in values], "v int"), str(dest))


def _values(spark, dest: Path) -> list[int]:
    return sorted(r.v for r in spark.read.parquet(str(dest)).collect())


def test_a_write_replaces_the_previous_output_and_leaves_nothing_beside_it(spark, tmp_path):
    dest = tmp_path / "asset"
    _write_frame(spark, dest, [1, 2])
    _write_frame(spark, dest, [3])
    assert _values(spark, dest) == [3]
    assert [p.name for p in tmp_path.iterdir()] == ["asset"]


def test_a_failed_write_leaves_the_previous_output_intact(spark, tmp_path):
    dest = tmp_path / "asset"
    _write_frame(spark, dest, [1, 2])

    def half_then_fail(staging: str) -> None:
        spark.createDataFrame([(9,)], "v int").write.parquet(staging)
        raise RuntimeError("killed while writing")

    with pytest.raises(RuntimeError, match="killed while writing"):
        replace_atomically(spark, str(dest), half_then_fail)
    assert _values(spark, dest) == [1, 2]
    recover_interrupted(spark, str(dest))  # what the next read or write does first
    assert [p.name for p in tmp_path.iterdir()] == ["asset"]


def test_a_kill_between_the_two_renames_restores_the_previous_output(spark, tmp_path):
    dest = tmp_path / "asset"
    _write_frame(spark, dest, [1, 2])
    dest.rename(tmp_path / f"asset{RETIRED}0123")  # moved aside; the new one never arrived
    (tmp_path / f"asset{STAGING}4567").mkdir()
    (tmp_path / "asset_other").mkdir()  # a different asset's output is left alone
    recover_interrupted(spark, str(dest))
    assert _values(spark, dest) == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["asset", "asset_other"]
