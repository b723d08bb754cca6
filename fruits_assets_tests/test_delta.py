"""Delta tables: merged changes, one commit each, none when nothing changed, every version readable without Spark."""

from fruits_assets.spark import delta
from fruits_assets.spark.delta import Changes

from .conftest import table


def _rows(spark, *rows):
    return spark.createDataFrame(list(rows), "path string, v long")


def test_changes_are_merged_by_path_in_one_commit_and_old_versions_stay_readable(spark, tmp_path):
    path = str(tmp_path / "t")
    first = delta.merge(spark, path, Changes(_rows(spark, ("a", 1), ("b", 2), ("c", 3)), _rows(spark).select("path")))
    assert (first.version, first.inserted) == (0, 3)
    second = delta.merge(spark, path, Changes(_rows(spark, ("b", 20), ("d", 4)), _rows(spark, ("c", 0)).select("path")))
    assert (second.version, second.inserted, second.updated, second.deleted) == (1, 1, 1, 1)
    latest = table(path).sort_values("path")
    assert latest.values.tolist() == [["a", 1], ["b", 20], ["d", 4]]
    assert table(path, version=0).sort_values("path").values.tolist() == [["a", 1], ["b", 2], ["c", 3]]


def test_a_key_upserted_and_deleted_is_upserted_and_nothing_to_change_makes_no_commit(spark, tmp_path):
    path = str(tmp_path / "t")
    delta.merge(spark, path, Changes(_rows(spark, ("a", 1)), _rows(spark).select("path")))
    both = delta.merge(spark, path, Changes(_rows(spark, ("a", 2)), _rows(spark, ("a", 0)).select("path")))
    assert (both.version, both.updated) == (1, 1) and table(path).values.tolist() == [["a", 2]]
    nothing = delta.merge(spark, path, Changes(_rows(spark), _rows(spark, ("zz", 0)).select("path")))
    assert nothing.version == 1 and nothing.unchanged  # a delete of a key the table lacks changes nothing
    told = delta.merge(spark, path, Changes(_rows(spark, ("b", 1)), _rows(spark).select("path"), none=True))
    assert told.unchanged and delta.latest_version(spark, path) == 1  # `none` is trusted: not even read


def test_a_replacement_records_its_sources_and_the_same_sources_are_not_written_again(spark, tmp_path):
    path = str(tmp_path / "t")
    made = delta.overwrite(spark, path, _rows(spark, ("a", 1)), {"features_version": 3})
    assert made.version == 0 and delta.made_from(spark, path) == {"features_version": 3}
    again = delta.overwrite(spark, path, _rows(spark, ("a", 2)), {"features_version": 4})
    assert again.version == 1 and table(path).values.tolist() == [["a", 2]]
    assert delta.made_from(spark, path) == {"features_version": 4}


def test_change_data_feed_gives_what_a_version_added_and_removed(spark, tmp_path):
    path = str(tmp_path / "t")
    delta.merge(spark, path, Changes(_rows(spark, ("a", 1), ("b", 2)), _rows(spark).select("path")))
    delta.merge(spark, path, Changes(_rows(spark, ("c", 3)), _rows(spark, ("a", 0)).select("path")))
    changes = delta.changes(spark, path, 0, 1).select("path", "_change_type").toPandas()
    assert sorted(changes.values.tolist()) == [["a", "delete"], ["c", "insert"]]
