"""Accounting for every file at the cost of the change: the touched paths across the tables, and the counts."""

from fruits_assets.spark.reconcile import (
    Totals,
    balanced,
    conflicts_among,
    label_counts,
    labeled_of,
    partition_counts,
    touched_counts,
    touched_rows,
)


def _paths(spark, *paths):
    return spark.createDataFrame([(p,) for p in paths], "path string")


def _labeled(spark, *paths):
    return spark.createDataFrame(
        [(p, "Kiwi", "Test", f"h-{p}") for p in paths], "path string, label string, split string, content_hash string"
    )


def test_touched_paths_each_in_exactly_one_part_balance(spark):
    raw = _paths(spark, "a", "b", "c", "d")
    rows = touched_rows(_paths(spark, "a", "b", "x"), raw, _labeled(spark, "a"), _paths(spark, "b"), _paths(spark, "a"))
    assert [r.asDict() for r in labeled_of(rows).collect()] == [
        {"path": "a", "label": "Kiwi", "split": "Test", "content_hash": "h-a"}
    ]
    touched = touched_counts(rows)
    assert touched == {
        "touched_listed": 2,
        "missing": 0,
        "unexpected": 0,
        "duplicated": 0,
        "unfeaturized": 0,
        "stray_features": 0,
    }
    counts = partition_counts(Totals(raw=4, labeled=3, rejected=1, features=3), touched, duplicated_before=0)
    assert balanced(counts["labeled_images_reconcile"], ("labeled_images", "rejected_images"))
    assert balanced(counts["every_image_accounted_for"], ("mobilenet_features", "rejected_images"))


def test_missing_unexpected_duplicated_and_unfeaturized_touched_paths_are_counted(spark):
    raw = _paths(spark, "a", "b", "c")
    labeled, rejected, features = _labeled(spark, "a", "b", "gone"), _paths(spark, "b"), _paths(spark, "z")
    touched = touched_counts(touched_rows(_paths(spark, "a", "b", "c", "gone", "z"), raw, labeled, rejected, features))
    assert touched == {
        "touched_listed": 3,
        "missing": 1,
        "unexpected": 2,
        "duplicated": 1,
        "unfeaturized": 2,
        "stray_features": 0,
    }
    counts = partition_counts(Totals(raw=3, labeled=3, rejected=1, features=1), touched, duplicated_before=0)
    assert not balanced(counts["labeled_images_reconcile"], ("labeled_images", "rejected_images"))
    assert counts["every_image_accounted_for"]["missing"] == 3  # c, and a and b labeled without features


def test_a_table_holding_a_path_twice_before_the_run_fails_the_count(spark):
    counts = partition_counts(
        Totals(3, 3, 0, 3),
        dict.fromkeys(("touched_listed", "missing", "unexpected", "duplicated", "unfeaturized", "stray_features"), 0),
        1,
    )
    assert not balanced(counts["labeled_images_reconcile"], ("labeled_images", "rejected_images"))


def test_the_same_bytes_under_two_labels_are_a_conflict_among_all_or_some_hashes(spark):
    labeled = spark.createDataFrame(
        [
            ("p1", "Kiwi", "h1", None),
            ("p2", "Lemon", "h1", None),
            ("p3", "Kiwi", "h2", None),
            ("p4", "Kiwi", "h2", None),
        ],
        "path string, label string, content_hash string, split string",
    )
    expected = [{"content_hash": "h1", "labels": ["Kiwi", "Lemon"], "paths": ["p1", "p2"]}]
    assert conflicts_among(labeled, None) == expected
    hashes = spark.createDataFrame([("h2",)], "content_hash string")
    assert conflicts_among(labeled, hashes) == []
    assert label_counts(labeled) == {(None, "Kiwi"): 3, (None, "Lemon"): 1}
