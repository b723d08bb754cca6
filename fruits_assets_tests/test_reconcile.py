"""Accounting for every image: the counts that say whether each raw image is in exactly one part."""

from fruits_assets.spark.reconcile import account_for


def _paths(spark, *paths):
    return spark.createDataFrame([(p,) for p in paths], "path string")


def test_every_raw_image_in_exactly_one_part_passes(spark):
    passed, counts = account_for(_paths(spark, "a", "b", "c"), {"x": _paths(spark, "a", "c"), "y": _paths(spark, "b")})
    assert passed
    assert counts == {"raw_images": 3, "missing": 0, "unexpected": 0, "duplicated": 0, "x": 2, "y": 1}


def test_missing_unexpected_and_duplicated_images_are_counted(spark):
    raw = _paths(spark, "a", "b", "c", "d")
    passed, counts = account_for(raw, {"x": _paths(spark, "a", "b"), "y": _paths(spark, "b", "e"), "z": _paths(spark)})
    assert not passed
    assert counts == {"raw_images": 4, "missing": 2, "unexpected": 1, "duplicated": 1, "x": 2, "y": 2, "z": 0}
