"""The first fruit classifier: trained and tested in Spark, the same model in one LiteRT file, `fruits identify`."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pyspark.ml import PipelineModel

from fruits_assets.spark.classifier import Evaluation, probabilities, train_test, with_class
from fruits_assets.vision.preprocess import decode_resized

from .conftest import phone_model, run_graph, write_tree

FRUITS = Path(sys.executable).with_name("fruits")
COLORS = {"Apple Red 1": (200, 20, 30), "Banana 1": (240, 220, 40), "Kiwi 1": (120, 100, 40)}
LAYOUT = {f"{split}/{label}": n for label in COLORS for split, n in (("Training", 12), ("Test", 5))}


def test_the_metrics_come_from_the_confusion_matrix():
    evaluation = Evaluation(np.array([[8, 2, 0], [1, 9, 0], [0, 0, 0]]))
    assert evaluation.accuracy == 17 / 20
    np.testing.assert_allclose(evaluation.precision, [8 / 9, 9 / 11, 0])
    np.testing.assert_allclose(evaluation.recall, [0.8, 0.9, 0])
    f1 = [2 * (8 / 9) * 0.8 / (8 / 9 + 0.8), 2 * (9 / 11) * 0.9 / (9 / 11 + 0.9)]
    assert evaluation.macro_f1 == pytest.approx(np.mean(f1))  # the class absent from the test set is left out


def test_a_tree_without_splits_is_held_out_per_label_the_same_way_every_time(spark):
    rows = [(f"p{label}{i:03d}", label, None) for label in ("a", "b") for i in range(50)]
    frame = spark.createDataFrame(rows, "path string, label string, split string")
    train, test, how = train_test(frame, 0.2, seed=7)
    assert "hold-out of 20%" in how
    held = test.groupBy("label").count().orderBy("label").collect()
    assert [(r["label"], r["count"]) for r in held] == [("a", 10), ("b", 10)]  # stratified
    again = train_test(frame, 0.2, seed=7)[1]
    assert sorted(r.path for r in test.collect()) == sorted(r.path for r in again.collect())
    assert train.count() == 80
    split = spark.createDataFrame(
        [("x", "a", "Training"), ("y", "a", "Test")], "path string, label string, split string"
    )
    assert train_test(split, 0.2, seed=7)[2] == "Training/Test splits"
    assert with_class(split, {"b": 0}).count() == 0  # rows of labels the index lacks are left out


def test_the_hold_out_does_not_depend_on_where_the_tree_lies(spark):
    """The same photos on a laptop and on S3 are held out alike: the draw hashes their names, not the root."""

    def held(root: str, seed: int = 7) -> list[str]:
        rows = [(f"{root}/{label}/{i:03d}.jpg", label, None) for label in ("a", "b") for i in range(50)]
        test = train_test(spark.createDataFrame(rows, "path string, label string, split string"), 0.2, seed)[1]
        return sorted(r.path.removeprefix(root) for r in test.collect())

    assert held("/tmp/pytest-1/Test") == held("s3://fruits/uploads/Test")
    assert held("/tmp/pytest-1/Test") != held("/tmp/pytest-1/Test", seed=8)  # the seed does draw


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root, storage = tmp_path_factory.mktemp("images"), tmp_path_factory.mktemp("storage")
    write_tree(root, LAYOUT, COLORS)
    result = run_graph(root, storage)
    return root, storage, result


def test_the_classifier_is_trained_on_training_tested_on_test_and_its_figures_shown(trained):
    _, _, result = trained
    metadata = {
        e.asset_key.to_user_string(): {k: v.value for k, v in e.event_specific_data.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
    }["fruit_classifier"]
    assert metadata["evaluated_on"] == "Training/Test splits"
    assert (metadata["train_images"], metadata["test_images"], metadata["classes"]) == (36, 15, 3)
    assert metadata["test_accuracy"] == 1.0 and metadata["macro_f1"] == 1.0  # three colours, easily told apart
    assert metadata["confusion_matrix"].startswith("![confusion matrix](data:image/png;base64,")
    assert np.array(metadata["confusion_matrix_counts"]).trace() == 15
    assert {r.data["label"] for r in metadata["per_class"].records} == set(COLORS)
    [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == "test_accuracy_reaches_floor"]
    assert check.passed and check.metadata["floor"].value == 0.95


def test_the_phone_model_agrees_with_the_spark_model_on_every_test_image(trained, spark):
    root, storage, _ = trained
    phone = phone_model(storage)
    assert phone.labels == sorted(COLORS) == list(json.loads((storage / "class_index.json").read_text()))
    current = json.loads((storage / "fruit_classifier" / "current.json").read_text())["folder"]
    model = PipelineModel.load(str(storage / "fruit_classifier" / current / "model"))
    features = spark.read.format("delta").load(str(storage / "pca_features")).filter("split = 'Test'")
    spark_side = {r.path: np.array(r.probabilities) for r in probabilities(model, features).collect()}
    assert len(spark_side) == 15
    for path, expected in spark_side.items():
        on_phone = phone.classify(decode_resized(Path(path.removeprefix("file:")).read_bytes()))
        assert on_phone.argmax() == expected.argmax()
        np.testing.assert_allclose(on_phone, expected, atol=1e-3)


def test_the_check_fails_when_the_floor_is_above_the_measured_accuracy(tmp_path):
    root, storage = tmp_path / "images", tmp_path / "storage"
    # Two labels of the same look: a classifier can but guess.
    write_tree(
        root,
        {f"{split}/{label}": n for label in ("Plum 1", "Plum 2") for split, n in (("Training", 10), ("Test", 6))},
        {"Plum 1": (110, 40, 90), "Plum 2": (110, 40, 90)},
    )
    config = {"ops": {"fruit_classifier": {"config": {"accuracy_floor": 0.99}}}}
    result = run_graph(root, storage, config, select="*")
    [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == "test_accuracy_reaches_floor"]
    accuracy = check.metadata["test_accuracy"].value
    assert accuracy < 0.99 and not check.passed and check.metadata["floor"].value == 0.99


def _identify(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(FRUITS), "identify", *arguments], capture_output=True, text=True, timeout=300)


def test_fruits_identify_names_the_fruit_and_says_clearly_what_it_cannot(trained, tmp_path):
    root, storage, _ = trained
    # With five test photos a class to fit the `unknown` thresholds on, even a photo the classifier learnt from may
    # fall below one (the shared tree's test measures the 99%): either way its nearest class comes first.
    photo = root / "Training" / "Banana 1" / "0_100.jpg"
    shown = _identify("--storage", str(storage), str(photo))
    assert shown.returncode == 0, shown.stderr
    line = shown.stdout.splitlines()[0]
    answer = line.removeprefix(f"{photo}: ").removeprefix("unknown (nearest: ")
    assert answer.startswith("Banana 1 ") and line.count(",") == 2, line  # the top three
    assert "1 photos in" in shown.stdout

    (tmp_path / "notes.txt").write_text("not a photo")
    bad = _identify("--storage", str(storage), str(photo), str(tmp_path / "missing.jpg"), str(tmp_path / "notes.txt"))
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert f"{tmp_path / 'missing.jpg'}: no such file" in bad.stderr
    assert f"{tmp_path / 'notes.txt'}: not identified: not_an_image" in bad.stderr
    assert bad.stdout.startswith(line.rsplit("  (", 1)[0])  # the good photo is still identified, alike

    empty = _identify("--storage", str(tmp_path / "no storage"), str(photo))
    assert empty.returncode == 2 and "Traceback" not in empty.stderr
    assert "no trained classifier under" in empty.stderr and "phone_model" in empty.stderr

    usage = subprocess.run([str(FRUITS)], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "usage: fruits identify" in usage.stderr
    top = _identify("--storage", str(storage), "--top", "0", str(photo))
    assert top.returncode == 2 and "--top: must be 1 or more, not 0" in top.stderr
