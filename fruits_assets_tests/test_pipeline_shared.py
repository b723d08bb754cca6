"""The whole graph materialized from the shell on ../shared/fruits-360/Test, as a user runs it.

A few dozen broken files and a few odd but valid ones are mixed in among the
real images: every real image must come out featurized, within the reference's
tolerance, and every broken file rejected with the right reason.
"""

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance
from PIL import Image

from fruits_assets.vision.reasons import Reason

from .conftest import materialize_in_shell, shared_path, table
from .test_preprocess import corrupted, png_header_only

TEST_IMAGES = 1714
BROKEN_PER_REASON = 6


def mix_in_bad_files(images: Path) -> tuple[dict[str, str], list[str]]:
    """Broken files (relative path -> expected reason) and odd but valid ones, spread over the label folders."""
    labels = sorted(p.name for p in images.iterdir() if p.is_dir())
    real = sorted(images.glob("*/*.jpg"))[0].read_bytes()
    makers = {
        Reason.EMPTY: lambda: b"",
        Reason.NOT_AN_IMAGE: lambda: b"<html>an upload form's error page</html>",
        Reason.TRUNCATED: lambda: real[: len(real) // 2],
        Reason.CORRUPT: lambda: corrupted(_as_png(real), at=120),
        Reason.TOO_LARGE: lambda: png_header_only(40_000, 40_000),
    }
    broken = {}
    for i, (reason, make) in enumerate((r, m) for r, m in makers.items() for _ in range(BROKEN_PER_REASON)):
        relative = f"{labels[(7 * i) % len(labels)]}/broken {reason} {i}.jpg"
        (images / relative).write_bytes(make())
        broken[relative] = reason
    odd = [f"{labels[0]}/really a png.jpg", f"{labels[1]}/_DSC0001.JPG"]
    (images / odd[0]).write_bytes(_as_png(real))
    (images / odd[1]).write_bytes(real)
    return broken, odd


def _as_png(jpeg: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def materialized(tmp_path_factory):
    work = tmp_path_factory.mktemp("shared_run")
    images = work / "Test"
    shutil.copytree(shared_path("fruits-360", "Test"), images)
    broken, odd = mix_in_bad_files(images)
    home, storage = work / "dagster_home", work / "storage"
    home.mkdir()
    env = {**os.environ, "FRUITS_IMAGES": str(images), "FRUITS_STORAGE": str(storage), "DAGSTER_HOME": str(home)}
    materialize_in_shell(env)
    return images, storage, DagsterInstance.from_config(str(home)), broken, odd


def test_every_asset_check_ran_and_the_copied_photo_is_a_label_conflict(materialized):
    images, _, instance, _, odd = materialized
    [run] = instance.get_runs()
    evaluations = {
        e.dagster_event.event_specific_data.check_name: e.dagster_event.event_specific_data
        for e in instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
    }
    assert {name: e.passed for name, e in evaluations.items()} == {
        "raw_images_listed": True,
        "labeled_images_reconcile": True,
        "every_image_accounted_for": True,
        "features_are_finite": True,
        "labels_agree": False,  # `_DSC0001.JPG` is a real photo of the first label, copied under the second
        "explained_variance_reaches_target": True,
        "csv_has_k_components": True,
        "test_accuracy_reaches_floor": True,
        "unlearnt_fruits_answered_unknown": True,
        "lags_newest_photos": True,  # on the CSV and on the classifier: the photos reached both
    }
    labels = sorted(p.name for p in images.iterdir() if p.is_dir())
    conflicts = evaluations["labels_agree"].metadata["conflicts"].value
    assert [c["labels"] for c in conflicts] == [labels[:2]]
    assert any(p.endswith(odd[1]) for p in conflicts[0]["paths"])
    assert evaluations["labels_agree"].severity.value == "WARN"  # reported, not blocking


def test_every_broken_file_is_rejected_with_its_reason(materialized):
    images, storage, _, broken, _ = materialized
    rejected = table(storage / "rejected_images")
    relative = rejected["path"].str.split(f"{images.resolve().as_posix()}/").str[1]
    assert dict(zip(relative, rejected["reason"], strict=True)) == broken
    assert len(broken) == 5 * BROKEN_PER_REASON


def test_features_match_torchvision_reference(materialized):
    images, storage, _, _, odd = materialized
    reference = np.load(shared_path("reference", "mobilenet_v2_torchvision_Test.npz"))
    stored = table(storage / "mobilenet_features")
    assert set(stored.columns) == {"path", "label", "split", "content_hash", "featurizer", "features"}
    stored["relative"] = stored["path"].str.split(f"{images.resolve().as_posix()}/").str[1]
    assert sorted(stored["relative"]) == sorted([*reference["paths"], *odd])  # every real image, and the odd ones
    stored = stored[~stored["relative"].isin(odd)]
    features = np.stack(stored.set_index("relative").loc[reference["paths"], "features"].to_numpy())
    assert features.dtype == np.float32 and features.shape == (TEST_IMAGES, 1280)
    difference = np.abs(features - reference["features"]).max()
    assert difference <= 1e-3  # the acceptance bound
    assert difference <= 5e-5  # what the README states of the LiteRT engine (1.8e-5 measured)
    assert (stored["label"] == stored["relative"].str.split("/").str[0]).all()
    assert stored["split"].isna().all()  # the root is the split folder itself: no split above the labels


def test_csv_holds_k_components_for_every_image(materialized):
    _, storage, instance, _, odd = materialized
    k = instance.get_latest_materialization_event(AssetKey("pca_model")).asset_materialization.metadata["k"].value
    csv = pd.read_csv(storage / "pca_features.csv")
    assert list(csv.columns) == ["path", "label", "split"] + [f"pc_{i}" for i in range(1, k + 1)]
    assert len(csv) == TEST_IMAGES + len(odd) and csv["path"].is_unique
    assert csv["path"].is_monotonic_increasing
    assert np.isfinite(csv.filter(like="pc_").to_numpy()).all()
    stored = table(storage / "pca_features").sort_values("path", ignore_index=True)
    # The CSV rounds to 6 decimals; the table keeps full precision.
    np.testing.assert_allclose(stored.filter(like="pc_").to_numpy(), csv.filter(like="pc_").to_numpy(), atol=5e-7)


def test_pca_reaches_target_with_smallest_k(materialized):
    _, _, instance, _, _ = materialized
    metadata = instance.get_latest_materialization_event(AssetKey("pca_model")).asset_materialization.metadata
    cumulative = metadata["cumulative_explained_variance"].value
    assert cumulative[-1] >= 0.90 > (cumulative[-2] if len(cumulative) > 1 else 0)
    assert len(cumulative) == metadata["k"].value
