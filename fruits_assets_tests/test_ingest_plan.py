"""The plan from the listing's change feed reads and removes what comparing the listing with the tables whole
would: after appends, updates, deletions, a path gone and back with its old stamp, and one gone and back changed."""

from fruits_assets.spark import delta
from fruits_assets.spark.delta import Changes
from fruits_assets.spark.ingest_plan import plan_changes, plan_ingest
from fruits_assets.spark.listing import RAW_SCHEMA

RECIPE, FEATURIZER = "litert/x|max_pixels=1", "litert/x"


def _listing(spark, *rows: tuple[str, str]):
    """raw_images rows: (path, stamp), the rest of the columns constant."""
    return spark.createDataFrame([(p, 1, None, None, stamp, "Kiwi", "Test", None) for p, stamp in rows], RAW_SCHEMA)


def _merge(spark, path: str, upserts, gone: list[str]) -> int:
    deletes = spark.createDataFrame([(p,) for p in gone], "path string")
    return delta.merge(spark, path, Changes(upserts, deletes), {}).state.version


def _done(spark, rows: list[tuple[str, str]]):
    """The three tables after a complete screening of `rows`: every file labeled and featurized."""
    labeled = spark.createDataFrame(
        [(p, "Kiwi", "Test", f"h-{p}", stamp, RECIPE) for p, stamp in rows],
        "path string, label string, split string, content_hash string, stamp string, recipe string",
    )
    rejected = spark.createDataFrame([], "path string, stamp string, recipe string, reason string")
    features = spark.createDataFrame(
        [(p, FEATURIZER, f"h-{p}") for p, _ in rows], "path string, featurizer string, content_hash string"
    )
    return labeled, rejected, features


def _paths(frame) -> list[str]:
    return sorted(r["path"] for r in frame.select("path").collect())


def test_the_change_feed_plan_reads_and_removes_what_the_whole_comparison_does(spark, tmp_path):
    raw = str(tmp_path / "raw_images")
    screened = [("a", "1"), ("b", "1"), ("c", "1"), ("e", "1"), ("f", "1")]
    since = _merge(spark, raw, _listing(spark, *screened), [])  # what the last complete screening saw
    _merge(spark, raw, _listing(spark, ("d", "1")), ["b", "e", "f"])  # d new; b, e and f gone
    # b back with its old stamp (an S3 object deleted and uploaded again, the same bytes); e back with new bytes;
    # c changed; a untouched; f stays gone
    now = _merge(spark, raw, _listing(spark, ("b", "1"), ("c", "2"), ("e", "2")), [])

    labeled, rejected, features = _done(spark, screened)
    listed = delta.read(spark, raw, now)
    whole = plan_ingest(spark, listed, labeled, rejected, features, 5, RECIPE, FEATURIZER, 100)
    changes = plan_changes(spark, delta.changes(spark, raw, since, now), lambda: labeled, 5, 100)

    assert _paths(changes.todo) == _paths(whole.todo) == ["c", "d", "e"]
    assert _paths(changes.gone) == _paths(whole.gone) == ["f"]
    assert (changes.todo_count, changes.kept, changes.removed) == (whole.todo_count, whole.kept, whole.removed)
    assert _paths(changes.before) == _paths(whole.before) == ["c", "e", "f"]  # what labeled held of them
    held = {r["path"]: r["_in_labeled"] for r in changes.todo.collect()}
    assert held == {"c": True, "d": False, "e": True}  # d, new, is appended; c and e merged


def test_a_first_run_plans_what_comparing_with_empty_tables_would(spark, tmp_path):
    raw = str(tmp_path / "raw_images")
    rows = [("a", "1"), ("b", "1"), ("c", "error: forbidden")]  # a listing error is read (and rejected) too
    listed = delta.read(spark, raw, _merge(spark, raw, _listing(spark, *rows), []))
    labeled, rejected, features = _done(spark, [])

    first = plan_ingest(spark, listed, None, None, None, 3, RECIPE, FEATURIZER, 2)
    compared = plan_ingest(spark, listed, labeled, rejected, features, 3, RECIPE, FEATURIZER, 2)

    assert _paths(first.todo) == _paths(compared.todo) == ["a", "b", "c"]
    assert sorted(first.todo.collect()) == sorted(compared.todo.collect())  # the listing's columns and HELD's flags
    assert _paths(first.touched) == _paths(compared.touched) == ["a", "b", "c"]
    assert _paths(first.gone) == _paths(compared.gone) == _paths(first.before) == _paths(compared.before) == []
    figures = ("todo_count", "listed", "kept", "removed", "duplicated")
    assert [getattr(first, f) for f in figures] == [getattr(compared, f) for f in figures] == [3, 3, 0, 0, 0]
    assert len(first.chunks) == len(compared.chunks) == 2
