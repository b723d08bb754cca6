"""The features at work: a first fruit classifier, and the same model as one file for the phone."""

import io
import json
from collections.abc import Iterator

import numpy as np
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    DataVersion,
    MetadataValue,
    Output,
    ResourceParam,
    StepLauncher,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)

from fruits_assets.assets.config import ClassifierConfig, RunGuard
from fruits_assets.assets.plots import confusion_matrix_png, markdown_image
from fruits_assets.resources.io_managers import MODEL_IO_MANAGER
from fruits_assets.resources.models import FittedModel, ModelStore, version_folder
from fruits_assets.resources.spark_resource import SparkResource
from fruits_assets.resources.tables import DeltaTables
from fruits_assets.spark.classifier import Evaluation, evaluate, fit_classifier, parameters, train_test, with_class
from fruits_assets.spark.progress import job_description
from fruits_assets.vision.engines import convert_to_litert
from fruits_assets.vision.phone import LABELS_FILE, MODEL_FILE, PhoneModel, build_phone_model, labels_json

CLASSIFIER, PHONE, PROJECTED = "fruit_classifier", "phone_model", "pca_features"
PARAMETERS, EVALUATION = "parameters.npz", "evaluation.json"
KEPT = (PARAMETERS, EVALUATION)


def _per_class_table(labels: list[str], evaluation, support: np.ndarray) -> MetadataValue:
    columns = [TableColumn("label", "string"), TableColumn("precision", "float"), TableColumn("recall", "float")]
    columns += [TableColumn("f1", "float"), TableColumn("test_images", "int")]
    records = [
        TableRecord(
            {
                "label": label,
                "precision": round(float(evaluation.precision[i]), 4),
                "recall": round(float(evaluation.recall[i]), 4),
                "f1": round(float(evaluation.f1[i]), 4),
                "test_images": int(support[i]),
            }
        )
        for i, label in enumerate(labels)
    ]
    return MetadataValue.table(records=records, schema=TableSchema(columns=columns))


@asset(
    io_manager_key=MODEL_IO_MANAGER,
    group_name="classification",
    kinds={"spark"},
    ins={"class_index": AssetIn()},
    deps=["pca_features", "pca_model"],
    check_specs=[AssetCheckSpec("test_accuracy_reaches_floor", asset=CLASSIFIER)],
)
def fruit_classifier(
    context: AssetExecutionContext,
    config: ClassifierConfig,
    pyspark: SparkResource,
    tables: DeltaTables,
    models: ModelStore,
    run_guard: RunGuard,
    class_index: dict[str, int],
    pyspark_step_launcher: ResourceParam[StepLauncher],
) -> Iterator:
    """Multinomial logistic regression (Spark MLlib) on the PCA features, trained on `Training`, tested on `Test`.

    A tree with no such splits is split by a seeded, stratified hold-out. Class ids are
    `class_index`'s. Beside the Spark model, its parameters and the PCA's as plain
    arrays (`parameters.npz`): what `phone_model` and `fruits identify` need, no Spark.
    """
    labels = sorted(class_index, key=class_index.get)
    projected = tables.state(PROJECTED)
    if projected is None:
        raise FileNotFoundError(f"no table {tables.path(PROJECTED)}: materialize {PROJECTED} first")
    # The PCA the features were projected with, not whichever is current: the phone applies this very one.
    pca_folder = projected.user_metadata["made_from"]["pca_model"]
    made_from = {PROJECTED: projected.identity, "pca_model": pca_folder, "classes": labels, **config.model_dump()}
    if models.made_from(CLASSIFIER) == made_from:  # nothing it depends on changed: the stored one stands, no Spark
        model, files = None, {name: models.file(CLASSIFIER, name) for name in KEPT}
    else:
        model, files = _train(pyspark, tables, models, config, class_index, labels, projected.version, pca_folder)
    figures = json.loads(files[EVALUATION])
    evaluation = Evaluation(np.array(figures["confusion"]))
    support = evaluation.confusion.sum(axis=1)
    plot = confusion_matrix_png(evaluation.confusion, labels)
    yield Output(
        FittedModel(model, made_from, files),
        data_version=DataVersion(version_folder(made_from)),
        metadata={
            "test_accuracy": evaluation.accuracy,
            "macro_f1": evaluation.macro_f1,
            "evaluated_on": figures["how"],
            "train_images": figures["train_images"],
            "test_images": int(support.sum()),
            "classes": len(labels),
            "per_class": _per_class_table(labels, evaluation, support),
            "confusion_matrix": MetadataValue.md(markdown_image(plot, "confusion matrix")),
            "confusion_matrix_counts": MetadataValue.json(evaluation.confusion.tolist()),
        },
    )
    yield AssetCheckResult(
        check_name="test_accuracy_reaches_floor",
        passed=evaluation.accuracy >= config.accuracy_floor,
        metadata={
            "test_accuracy": evaluation.accuracy,
            "floor": config.accuracy_floor,
            "macro_f1": evaluation.macro_f1,
        },
    )


def _train(pyspark, tables, models, config, class_index, labels, version: int, pca_folder: str) -> tuple:
    """Train on one split, test on the other; the model, and the files kept beside it: the evaluation, and the
    regression's and the PCA's parameters as plain arrays (the PCA the features were projected with)."""
    with job_description(pyspark.spark_session, "fruit_classifier: train and test"):
        table = with_class(tables.read(PROJECTED, version), class_index)
        train, test, how = train_test(table, config.holdout_share, config.seed)
        model = fit_classifier(train, config.reg_param)
        evaluation = evaluate(model, test, len(labels))
        train_images = int(train.count())
    pca = models.load("pca_model", pca_folder)
    scaler, components = pca.stages[0], pca.stages[-1]
    arrays = {
        "mean": scaler.mean.toArray(),
        "std": scaler.std.toArray(),
        "components": components.pc.toArray(),
        **parameters(model),
        "labels": np.array(labels),
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    figures = {"confusion": evaluation.confusion.tolist(), "how": how, "train_images": train_images}
    return model, {PARAMETERS: buffer.getvalue(), EVALUATION: json.dumps(figures).encode()}


@asset(io_manager_key=MODEL_IO_MANAGER, group_name="classification", kinds={"tensorflow", "tflite"}, deps=[CLASSIFIER])
def phone_model(context: AssetExecutionContext, models: ModelStore, run_guard: RunGuard) -> Output:
    """`fruits_classifier.tflite` and `labels.json`: one LiteRT model from RGB pixels to class probabilities.

    Normalization, MobileNetV2, the scaler, the PCA and the classifier, in one graph
    converted from Keras, built from the exact classifier version it names (and the
    PCA that classifier was trained on), as a version folder behind `current.json`.
    No Spark: it runs where TensorFlow is, the orchestrating host on EMR.
    `fruits identify` runs it.
    """
    classifier = models.current_folder(CLASSIFIER)
    if classifier is None:
        raise FileNotFoundError(f"no {CLASSIFIER} under {models.locations.storage_root}: materialize it first")
    made_from = {CLASSIFIER: classifier}
    version = DataVersion(version_folder(made_from))
    if models.made_from(PHONE) == made_from:  # built from this very classifier already
        return Output(FittedModel(None, made_from), data_version=version, metadata={"classifier": classifier})
    with np.load(io.BytesIO(models.file(CLASSIFIER, PARAMETERS, classifier))) as saved:
        arrays = {name: saved[name] for name in saved.files}
    labels = [str(label) for label in arrays["labels"]]
    flatbuffer = convert_to_litert(build_phone_model(arrays))
    files = {MODEL_FILE: flatbuffer, LABELS_FILE: labels_json(labels)}
    check = PhoneModel.from_files(files[MODEL_FILE], files[LABELS_FILE])  # the file loads and answers
    probabilities = check.classify(np.full((224, 224, 3), 255, dtype=np.uint8))
    return Output(
        FittedModel(None, made_from, files),
        data_version=version,
        metadata={
            "classifier": classifier,
            "model_bytes": len(flatbuffer),
            "classes": len(labels),
            "input": "float32 [1, 224, 224, 3], RGB 0..255",
            "output": f"float32 [1, {len(labels)}], probabilities in labels.json's order",
            "probabilities_sum_on_white": float(probabilities.sum()),
        },
    )
