"""One CSV from a table: parts written in parallel and joined once, header first, in order; judged before it
replaces the last file; what a killed or refused write leaves behind."""

from pathlib import Path

import pandas as pd

from fruits_assets.spark.files import STAGING, Produced, write_csv


def _rows(spark, n: int):
    frame = spark.createDataFrame(
        [(f"p{i:03d}", 'Kiwi, "gold"', float(i) / 3) for i in range(n)], "path string, label string, pc_1 double"
    )
    return frame.repartition(4).orderBy("path")  # several ordered parts


def _write(spark, dest: Path, n: int, accept=lambda produced: True):
    return write_csv(_rows(spark, n), str(dest), accept, lambda: None, {})


def test_parts_are_joined_once_in_order_under_one_header_and_nothing_is_left_beside_the_file(spark, tmp_path):
    dest = tmp_path / "m.csv"
    produced, size = _write(spark, dest, 50)
    assert produced == Produced(["path", "label", "pc_1"], 50, 0) and size == dest.stat().st_size
    table = pd.read_csv(dest)
    assert table["path"].tolist() == [f"p{i:03d}" for i in range(50)] and set(table["label"]) == {'Kiwi, "gold"'}
    assert dest.read_text().splitlines()[0] == "path,label,pc_1"
    assert [p.name for p in tmp_path.iterdir()] == ["m.csv"]


def test_a_write_its_check_refuses_leaves_the_previous_file_as_it_was(spark, tmp_path):
    dest = tmp_path / "m.csv"
    _write(spark, dest, 5)
    before = dest.read_bytes()
    produced, size = _write(spark, dest, 8, accept=lambda produced: produced.rows == 5)
    assert size is None and produced.rows == 8
    assert dest.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["m.csv"]


def test_values_that_are_not_finite_are_counted_as_the_parts_are_written(spark, tmp_path):
    frame = spark.createDataFrame([("a", float("nan")), ("b", 1.0), ("c", float("inf"))], "path string, pc_1 double")
    produced, _ = write_csv(frame.orderBy("path"), str(tmp_path / "m.csv"), lambda p: False, lambda: None, {})
    assert produced.not_finite == 2


def test_what_a_killed_write_left_beside_the_file_is_cleared_by_the_next(spark, tmp_path):
    dest = tmp_path / "m.csv"
    (tmp_path / f"m.csv{STAGING}0123").mkdir()  # a run killed while its parts were written
    (tmp_path / f"m.csv{STAGING}0123" / "part-00000.csv").write_text("x\n")
    (tmp_path / "other.csv").write_text("kept\n")  # another file is left alone
    _write(spark, dest, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv", "other.csv"]


def test_numbers_are_rounded_to_the_decimals_asked_and_text_and_nulls_read_back_exactly(spark, tmp_path):
    names = ["a", 'Kiwi, "gold"', " spaced ", "two\nlines", ""]
    frame = spark.createDataFrame(
        [(f"p{i}", name, None if i % 2 else "Test", i / 3, 10.0**-i) for i, name in enumerate(names)],
        "path string, label string, split string, pc_1 double, pc_2 double",
    ).orderBy("path")
    dest = tmp_path / "m.csv"
    produced, _ = write_csv(frame, str(dest), lambda p: True, lambda: None, {}, decimals=6)
    assert produced == Produced(frame.columns, len(names), 0)
    table = pd.read_csv(dest, keep_default_na=False, na_values={"split": [""]})
    assert table["label"].tolist() == names
    assert table["split"].isna().tolist() == [bool(i % 2) for i in range(len(names))]
    assert table["pc_1"].tolist() == [round(i / 3, 6) for i in range(len(names))]
    assert table["pc_2"].tolist() == [1.0, 0.1, 0.01, 0.001, 0.0001]
