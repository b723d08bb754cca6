"""Freshness: the checks `lags_newest_photos` pass while the CSV and the classifier hold every committed photo, and
warn, naming where the photos wait, once newer photos are committed that have not reached them."""

import time

import pytest

from .conftest import run_graph, write_tree

COLORS = {"Kiwi 1": (120, 100, 40), "Lemon 1": (240, 220, 40)}
INGEST = "group:images or group:features"  # the sensor's runs: the listing and the screening, nothing after


WARN_HOURS = 0.01  # the least FRUITS_FRESHNESS_HOURS takes: 36 s


def freshness(root, storage) -> dict[str, object]:
    """The hourly schedule's job, in this process, warning past 36 s: each check's evaluation by asset."""
    from fruits_assets.definitions import build_defs
    from fruits_assets.settings import Settings

    defs = build_defs(Settings(images=str(root), storage=str(storage), freshness_hours=WARN_HOURS))
    result = defs.resolve_job_def("freshness_checks").execute_in_process()
    return {e.asset_key.to_user_string(): e for e in result.get_asset_check_evaluations()}


@pytest.mark.spark
def test_photos_not_yet_in_the_csv_and_the_classifier_make_their_checks_warn(tmp_path):
    root, storage = tmp_path / "images", tmp_path / "storage"
    write_tree(root, {"Training/Kiwi 1": 4, "Training/Lemon 1": 4, "Test/Kiwi 1": 2, "Test/Lemon 1": 2}, COLORS)
    assert run_graph(root, storage).success
    fresh = freshness(root, storage)
    assert set(fresh) == {"pca_features_csv", "fruit_classifier"}
    assert all(e.passed for e in fresh.values()), fresh

    write_tree(root, {"Training/Kiwi 1": 6}, COLORS)  # two more Kiwi photos, screened but carried no further
    assert run_graph(root, storage, select=INGEST).success
    time.sleep(WARN_HOURS * 3600 + 1)  # the new photos wait longer than the checks allow
    lagging = freshness(root, storage)
    for name, evaluation in lagging.items():
        metadata = {k: v.value for k, v in evaluation.metadata.items()}
        assert not evaluation.passed and evaluation.severity.value == "WARN", name
        assert metadata["waiting_at"] == "pca_features" and metadata["lag_hours"] > 0, (name, metadata)
