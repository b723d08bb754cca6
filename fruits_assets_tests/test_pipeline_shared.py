"""The whole graph materialized from the shell on ../shared/fruits-360/Test, as a user runs it."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance

from .conftest import shared_path

TEST_IMAGES = 1714


@pytest.fixture(scope="module")
def materialized(tmp_path_factory):
    images = shared_path("fruits-360", "Test")
    work = tmp_path_factory.mktemp("shared_run")
    home, storage = work / "dagster_home", work / "storage"
    home.mkdir()
    env = {**os.environ, "FRUITS_IMAGES": str(images), "FRUITS_STORAGE": str(storage), "DAGSTER_HOME": str(home)}
    dagster = Path(sys.executable).with_name("dagster")
    run = subprocess.run(
        [str(dagster), "asset", "materialize", "-m", "fruits_assets", "--select", "*"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-5000:]
    return images, storage, DagsterInstance.from_config(str(home))


def test_every_asset_check_ran_and_passed(materialized):
    _, _, instance = materialized
    [run] = instance.get_runs()
    evaluations = [
        e.dagster_event.event_specific_data
        for e in instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
    ]
    names = {e.check_name: e.passed for e in evaluations}
    assert names == {
        "raw_images_are_images": True,
        "labeled_images_reconcile": True,
        "features_reconcile": True,
        "features_are_finite": True,
        "explained_variance_reaches_target": True,
        "csv_has_k_components": True,
    }


def test_features_match_torchvision_reference(materialized):
    images, storage, _ = materialized
    reference = np.load(shared_path("reference", "mobilenet_v2_torchvision_Test.npz"))
    table = pq.read_table(storage / "mobilenet_features").to_pandas()
    assert len(table) == TEST_IMAGES
    assert set(table.columns) == {"path", "label", "split", "features"}
    table["relative"] = table["path"].str.split(f"{images.resolve().as_posix()}/").str[1]
    features = np.stack(table.set_index("relative").loc[reference["paths"], "features"].to_numpy())
    assert features.dtype == np.float32 and features.shape == (TEST_IMAGES, 1280)
    assert np.abs(features - reference["features"]).max() <= 1e-3
    assert (table["label"] == table["relative"].str.split("/").str[0]).all()
    assert table["split"].isna().all()  # the root is the split folder itself: no split above the labels


def test_csv_holds_k_components_for_every_image(materialized):
    _, storage, instance = materialized
    k = instance.get_latest_materialization_event(AssetKey("pca_model")).asset_materialization.metadata["k"].value
    table = pd.read_csv(storage / "pca_features.csv")
    assert list(table.columns) == ["path", "label", "split"] + [f"pc_{i}" for i in range(1, k + 1)]
    assert len(table) == TEST_IMAGES and table["path"].is_unique
    assert table["path"].is_monotonic_increasing
    assert np.isfinite(table.filter(like="pc_").to_numpy()).all()
    parquet = pq.read_table(storage / "pca_features").to_pandas().sort_values("path", ignore_index=True)
    np.testing.assert_allclose(parquet.filter(like="pc_").to_numpy(), table.filter(like="pc_").to_numpy(), rtol=1e-12)


def test_pca_reaches_target_with_smallest_k(materialized):
    _, _, instance = materialized
    metadata = instance.get_latest_materialization_event(AssetKey("pca_model")).asset_materialization.metadata
    cumulative = metadata["cumulative_explained_variance"].value
    assert cumulative[-1] >= 0.90 > (cumulative[-2] if len(cumulative) > 1 else 0)
    assert len(cumulative) == metadata["k"].value
