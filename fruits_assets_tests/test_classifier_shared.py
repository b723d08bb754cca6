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


def _classifier_folder(storage: Path) -> Path:
    return (
        storage / "fruit_classifier" / json.loads((storage / "fruit_classifier" / "current.json").read_text())["folder"]
    )


def _parameters(storage: Path) -> dict[str, np.ndarray]:
    with np.load(_classifier_folder(storage) / "parameters.npz") as saved:
        return {name: saved[name] for name in saved.files}


def _spark_scores(spark, storage: Path, pcs: dict[str, np.ndarray]) -> tuple[dict[str, dict[str, float]], dict]:
    """Spark's scores of the unknown rule for each photo's PCA features, by the pipeline's own scoring, and the
    rule's thresholds."""
    import pandas as pd

    from fruits_assets.spark.openset import scored

    arrays = _parameters(storage)
    frame = pd.DataFrame(
        np.stack(list(pcs.values())), columns=[f"pc_{i + 1}" for i in range(arrays["components"].shape[1])]
    )
    frame.insert(0, "path", list(pcs))
    rows = scored(spark.createDataFrame(frame), arrays).toPandas()
    cuts = dict(zip(arrays["unknown_rule"].tolist(), arrays["unknown_thresholds"].tolist(), strict=True))
    return {r["path"]: {name: float(r[name]) for name in cuts} for _, r in rows.iterrows()}, cuts


def _phone_scores(answer) -> dict[str, float]:
    return {"msp": float(answer.probabilities.max()), "mahalanobis": answer.known_score}


def _unknown(scores: dict[str, float], cuts: dict[str, float]) -> bool:
    from fruits_assets.vision.openset import answered_unknown

    return bool(answered_unknown({name: np.array([scores[name]]) for name in cuts}, cuts)[0])


def assert_same_answers(phone: dict[str, dict], spark_side: dict[str, dict], cuts: dict[str, float]) -> None:
    """LiteRT (float32) and Spark (float64) answer alike; a photo may differ only where both put one of its scores
    within float noise of that score's threshold (the two sides' probabilities differ by about 1e-6)."""
    assert set(phone) == set(spark_side)
    differing = [p for p in phone if _unknown(phone[p], cuts) != _unknown(spark_side[p], cuts)]
    for path in differing:
        near = [
            name
            for name, cut in cuts.items()
            if max(abs(phone[path][name] - cut), abs(spark_side[path][name] - cut)) <= 1e-4 * max(1.0, abs(cut))
        ]
        assert near, (path, phone[path], spark_side[path], cuts)
    print(f"unknown or not, alike on {len(phone) - len(differing)}/{len(phone)}; differing at a threshold: {differing}")
    assert len(differing) <= max(1, len(phone) // 500)


def _not_fruits(work: Path) -> list[Path]:
    """Pictures with no fruit in them: scikit-image's sample photographs, each also shrunk onto a white
    100x100 canvas as Fruits-360 frames its fruits (the white background must not be what says "fruit"), and a
    blank white, a black and a noise picture."""
    import skimage
    from PIL import Image

    folder = Path(skimage.__file__).parent / "data"
    out = work / "not fruits"
    out.mkdir()
    made = []
    for source in sorted(folder.glob("*.png")) + sorted(folder.glob("*.jpg")):
        image = Image.open(source).convert("RGB")
        image.save(out / f"{source.stem}.png")
        canvas = Image.new("RGB", (100, 100), "white")
        image.thumbnail((80, 80))
        canvas.paste(image, ((100 - image.width) // 2, (100 - image.height) // 2))
        canvas.save(out / f"{source.stem} on white.png")
        made += [out / f"{source.stem}.png", out / f"{source.stem} on white.png"]
    rng = np.random.default_rng(0)
    for name, pixels in (
        ("white", np.full((100, 100, 3), 255)),
        ("black", np.zeros((100, 100, 3))),
        ("noise", rng.integers(0, 256, (100, 100, 3))),
    ):
        Image.fromarray(pixels.astype(np.uint8)).save(out / f"{name}.png")
        made.append(out / f"{name}.png")
    return made


def test_known_photos_are_named_and_unlearnt_ones_answered_unknown_alike_by_litert_and_spark(materialized, spark):
    root, storage, _ = materialized
    open_set = json.loads((_classifier_folder(storage) / "evaluation.json").read_text())["open_set"]
    for fold in open_set["folds"]:  # trained without these classes, their photos are answered unknown
        print(f"left out {fold['left_out']}: unknown {fold['unknown']}, AUROC {fold['auroc']}")
        assert fold["unknown"][open_set["score"]] >= 0.95, fold
    assert len(open_set["folds"]) >= 3

    phone = phone_model(storage)
    features = spark.read.format("delta").load(str(storage / "pca_features")).filter("split = 'Test'")
    test_pcs = {r.path: np.array([r[c] for c in features.columns if c.startswith("pc_")]) for r in features.collect()}
    labels = {r.path: r.label for r in features.select("path", "label").collect()}
    spark_side, cuts = _spark_scores(spark, storage, test_pcs)
    phone_side = {}
    right_and_known = 0
    for path in test_pcs:
        answer = phone.answer(decode_resized(Path(path.removeprefix("file:")).read_bytes()))
        phone_side[path] = _phone_scores(answer)
        assert answer.unknown == _unknown(phone_side[path], cuts)  # labels.json's thresholds are the classifier's
        right_and_known += int(not answer.unknown and phone.labels[int(answer.probabilities.argmax())] == labels[path])
    print(f"known Test photos named right and not unknown: {right_and_known}/{len(test_pcs)}")
    assert right_and_known / len(test_pcs) >= 0.99
    assert_same_answers(phone_side, spark_side, cuts)  # the same answer, unknown included, on every Test photo


def test_pictures_with_no_fruit_are_all_unknown_to_litert_and_to_spark(materialized, spark, tmp_path):
    from fruits_assets.spark.ingest import ingest_column

    _, storage, _ = materialized
    pictures = _not_fruits(tmp_path)
    rows = spark.createDataFrame([(f"file:{p}", "none", None) for p in pictures], "path string, label string, e string")
    outcome, _, _ = ingest_column(spark, "litert", 4, 50_000_000)
    featurized = rows.select("path", outcome("path", "label", "e").alias("o")).select("path", "o.features").collect()
    arrays = _parameters(storage)
    std = arrays["std"]
    scale = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 0.0)
    pcs = {r.path: ((np.asarray(r.features) - arrays["mean"]) * scale) @ arrays["components"] for r in featurized}
    spark_side, cuts = _spark_scores(spark, storage, pcs)
    phone = phone_model(storage)
    phone_side = {f"file:{p}": _phone_scores(phone.answer(decode_resized(p.read_bytes()))) for p in pictures}
    known = sorted(path for path, scores in spark_side.items() if not _unknown(scores, cuts))
    print(f"{len(pictures)} pictures with no fruit; answered unknown by Spark: {len(pictures) - len(known)}")
    assert not known, known
    assert not [path for path, scores in phone_side.items() if not _unknown(scores, cuts)]


def test_fruits_identify_says_unknown_for_a_picture_with_no_fruit_and_exits_0(materialized, tmp_path):
    _, storage, _ = materialized
    pictures = [p for p in _not_fruits(tmp_path) if p.stem in ("coffee", "chelsea on white")]
    shown = subprocess.run(
        [str(FRUITS), "identify", "--storage", str(storage), *map(str, pictures)], capture_output=True, text=True
    )
    print(shown.stdout)
    assert shown.returncode == 0, shown.stderr  # an unknown fruit is an answer, not an error
    lines = shown.stdout.splitlines()[:2]
    assert all(": unknown (nearest: " in line for line in lines), lines
