"""The classifier on the real Fruits-360 tree (Training + Test, ../shared): its figures, and the phone's agreement.

The whole graph is materialized from the shell, as a user runs it. Every `Test` image
then goes through the phone's LiteRT model, from its JPEG, and is compared with the
Spark model's probabilities on the pipeline's features.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dagster import AssetKey, DagsterInstance
from pyspark.ml import PipelineModel

from fruits_assets.spark.classifier import probabilities
from fruits_assets.vision.preprocess import decode_resized

from .conftest import materialize_in_shell, phone_model, shared_path

FRUITS = Path(sys.executable).with_name("fruits")


@pytest.fixture(scope="module")
def materialized(tmp_path_factory):
    root = shared_path("fruits-360")
    work = tmp_path_factory.mktemp("classifier")
    home, storage = work / "home", work / "storage"
    home.mkdir()
    env = {**os.environ, "FRUITS_IMAGES": str(root), "FRUITS_STORAGE": str(storage), "DAGSTER_HOME": str(home)}
    materialize_in_shell(env)
    return root, storage, DagsterInstance.from_config(str(home))


def test_the_classifier_reaches_the_floor_on_the_real_test_split(materialized):
    _, _, instance = materialized
    event = instance.get_latest_materialization_event(AssetKey("fruit_classifier"))
    metadata = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    assert metadata["evaluated_on"] == "Training/Test splits" and metadata["test_images"] == 1714
    assert metadata["test_accuracy"] >= 0.95 and metadata["macro_f1"] >= 0.95
    print(f"test accuracy {metadata['test_accuracy']:.4f}, macro F1 {metadata['macro_f1']:.4f}")
    print("confusion matrix:", json.dumps(metadata["confusion_matrix_counts"]))


def test_the_phone_model_agrees_with_the_spark_model_on_every_test_image(materialized, spark):
    root, storage, _ = materialized
    phone = phone_model(storage)
    current = json.loads((storage / "fruit_classifier" / "current.json").read_text())["folder"]
    model = PipelineModel.load(str(storage / "fruit_classifier" / current / "model"))
    features = spark.read.format("delta").load(str(storage / "pca_features")).filter("split = 'Test'")
    spark_side = {r.path: np.array(r.probabilities) for r in probabilities(model, features).collect()}
    assert len(spark_side) == 1714
    same, worst = 0, 0.0
    for path, expected in spark_side.items():
        on_phone = phone.classify(decode_resized(Path(path.removeprefix("file:")).read_bytes()))
        same += int(on_phone.argmax() == expected.argmax())
        worst = max(worst, float(np.abs(on_phone - expected).max()))
    print(f"same top-1 on {same}/1714 Test images, largest probability difference {worst:.2e}")
    assert same / 1714 >= 0.995 and worst <= 1e-3


def test_fruits_identify_on_ten_test_photos(materialized):
    root, storage, _ = materialized
    photos = sorted((root / "Test").glob("*/*.jpg"))[::172][:10]
    shown = subprocess.run(
        [str(FRUITS), "identify", "--storage", str(storage), *map(str, photos)], capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    print(shown.stdout)
    lines = shown.stdout.splitlines()
    assert len(lines) == 11
    right = sum(
        line.split(": ", 1)[1].startswith(photo.parent.name) for line, photo in zip(lines, photos, strict=False)
    )
    assert right >= 9  # the classifier is right on 95% or more of Test: one miss in ten at most, here
