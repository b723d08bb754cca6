"""Accounting for every file: the counts that say whether each raw file is in exactly one part of a partition."""

from fruits_assets.spark.reconcile import balanced, label_conflicts, reconcile


def _paths(spark, *paths):
    return spark.createDataFrame([(p,) for p in paths], "path string")


def test_every_raw_file_in_exactly_one_part_passes(spark):
    counts = reconcile(
        _paths(spark, "a", "b", "c"), {"x": _paths(spark, "a", "c"), "y": _paths(spark, "b")}, {"c": ("x", "y")}
    )
    assert counts["c"] == {"raw_images": 3, "x": 2, "y": 1, "missing": 0, "unexpected": 0, "duplicated": 0}
    assert balanced(counts["c"], ("x", "y"))


def test_missing_unexpected_and_duplicated_files_are_counted_per_partition_in_one_pass(spark):
    raw = _paths(spark, "a", "b", "c", "d")
    parts = {"x": _paths(spark, "a", "b"), "y": _paths(spark, "b", "e"), "z": _paths(spark, "c", "d", "a")}
    counts = reconcile(raw, parts, {"xy": ("x", "y"), "z": ("z",)})
    assert counts["xy"] == {"raw_images": 4, "x": 2, "y": 2, "missing": 2, "unexpected": 1, "duplicated": 1}
    assert not balanced(counts["xy"], ("x", "y"))
    assert counts["z"] == {"raw_images": 4, "z": 3, "missing": 1, "unexpected": 0, "duplicated": 0}


def test_the_same_bytes_under_two_labels_are_a_conflict(spark):
    labeled = spark.createDataFrame(
        [("p1", "Kiwi", "h1"), ("p2", "Lemon", "h1"), ("p3", "Kiwi", "h2"), ("p4", "Kiwi", "h2")],
        "path string, label string, content_hash string",
    )
    count, examples = label_conflicts(labeled, shown=10)
    assert count == 1
    assert examples == [{"content_hash": "h1", "labels": ["Kiwi", "Lemon"], "paths": ["p1", "p2"]}]
