"""The features at work: a first fruit classifier, and the same model as one file for the phone."""

import io
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict

import numpy as np
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    DataVersion,
    Failure,
    MetadataValue,
    Output,
    ResourceParam,
    StepLauncher,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)

from fruits_assets.assets.automation import ON_NEW_DATA
from fruits_assets.assets.config import POOL, TRANSIENT_FAILURES, ClassifierConfig, RunGuard, retried_only_if_transient
from fruits_assets.assets.pca import projection_of
from fruits_assets.assets.plots import confusion_matrix_png, markdown_image, open_set_png
from fruits_assets.resources.emr import register_step_work
from fruits_assets.resources.io_managers import MODEL_IO_MANAGER
from fruits_assets.resources.models import FittedModel, ModelStore, version_folder
from fruits_assets.resources.spark_resource import SparkResource
from fruits_assets.resources.tables import DeltaTables
from fruits_assets.spark.classifier import (
    CLASS_COL,
    Evaluation,
    evaluate,
    fit_classifier,
    parameters,
    train_test,
    with_class,
)
from fruits_assets.spark.openset import HALF, Fold, class_gaussians, leave_classes_out, scored, with_halves
from fruits_assets.spark.progress import job_description, side_by_side
from fruits_assets.vision.openset import CHOSEN, RULE, SCORES, answered_unknown, rule_thresholds, threshold
from fruits_assets.vision.phone import LABELS_FILE, LAYOUT_FILE, MODEL_FILE, PhoneModel, labels_json, phone_flatbuffer

CLASSIFIER, PHONE, PROJECTED, FEATURES = "fruit_classifier", "phone_model", "pca_features", "mobilenet_features"
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
    automation_condition=ON_NEW_DATA,
    pool=POOL,
    retry_policy=TRANSIENT_FAILURES,
    check_specs=[
        AssetCheckSpec("test_accuracy_reaches_floor", asset=CLASSIFIER),
        AssetCheckSpec(
            "unlearnt_fruits_answered_unknown",
            asset=CLASSIFIER,
            description="Trained without some classes, their photos are answered unknown (every way tested).",
        ),
    ],
)
@retried_only_if_transient
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
    projected, pca_folder, made_from = _classifier_made_from(tables, config, labels)
    if models.made_from(CLASSIFIER) == made_from:  # nothing it depends on changed: the stored one stands, no Spark
        model, files = None, {name: models.file(CLASSIFIER, name) for name in KEPT}
    else:
        model, files = _train(pyspark, tables, models, config, class_index, labels, projected.version, pca_folder)
    figures = json.loads(files[EVALUATION])
    evaluation = Evaluation(np.array(figures["confusion"]))
    support = evaluation.confusion.sum(axis=1)
    plot = confusion_matrix_png(evaluation.confusion, labels)
    open_set = figures["open_set"]
    unknown_min = min((f["unknown"][CHOSEN] for f in open_set["folds"]), default=float("nan"))
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
            "unknown_rule": open_set["score"],
            "unknown_thresholds": MetadataValue.json(open_set["rule_thresholds"]),
            "known_share": open_set["known_share"],
            "known_named_right": open_set["known_named_right"][CHOSEN],
            "unlearnt_answered_unknown_min": unknown_min,
            "open_set_scores": _open_set_table(open_set),
            "open_set_plot": MetadataValue.md(
                markdown_image(
                    open_set_png(open_set["folds"], (*SCORES, CHOSEN), config.unknown_floor), "unknown fruits"
                )
            ),
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
    yield AssetCheckResult(
        check_name="unlearnt_fruits_answered_unknown",
        passed=bool(open_set["folds"]) and unknown_min >= config.unknown_floor,
        metadata={
            "floor": config.unknown_floor,
            "lowest_share_answered_unknown": unknown_min,
            "ways_tested": len(open_set["folds"]),
            "known_named_right": open_set["known_named_right"][CHOSEN],
        },
    )


def _open_set_table(open_set: dict) -> MetadataValue:
    """Per score: its AUROC (known against left-out photos), the lowest share of left-out photos it answers
    unknown, and the share of known photos it keeps named right, at its threshold."""
    folds = open_set["folds"]
    columns = [TableColumn("score", "string"), TableColumn("auroc_mean", "float"), TableColumn("unknown_min", "float")]
    columns += [TableColumn("known_named_right", "float"), TableColumn("chosen", "bool")]
    records = [
        TableRecord(
            {
                "score": name,
                "auroc_mean": round(float(np.mean([f["auroc"][name] for f in folds])), 4)
                if folds and name in folds[0]["auroc"]
                else float("nan"),
                "unknown_min": round(min((f["unknown"][name] for f in folds), default=float("nan")), 4),
                "known_named_right": round(open_set["known_named_right"][name], 4),
                "chosen": name == open_set["score"],
            }
        )
        for name in (*SCORES, CHOSEN)
    ]
    return MetadataValue.table(records=records, schema=TableSchema(columns=columns))


def _classifier_made_from(tables: DeltaTables, config: ClassifierConfig, labels: list[str]) -> tuple:
    projected = tables.state(PROJECTED)
    if projected is None:
        raise Failure(f"no table {tables.path(PROJECTED)}: materialize {PROJECTED} first", allow_retries=False)
    # The PCA the features were projected with, not whichever is current: the phone applies this very one.
    pca_folder = projected.user_metadata["made_from"]["pca_model"]
    made_from = {PROJECTED: projected.identity, "pca_model": pca_folder, "classes": labels, **config.model_dump()}
    return projected, pca_folder, made_from


def classifier_has_work(resources, op_config: dict) -> bool:
    """For the step launcher: whether the current classifier was made from other inputs (no JVM)."""
    locations = resources.tables.locations
    index = json.loads(locations.read(locations.path_of("class_index.json")) or b"{}")
    labels = sorted(index, key=index.get)
    made_from = _classifier_made_from(resources.tables, ClassifierConfig(**op_config), labels)[2]
    return resources.models.made_from(CLASSIFIER) != made_from


register_step_work(CLASSIFIER, classifier_has_work)


def _train(pyspark, tables, models, config, class_index, labels, version: int, pca_folder: str) -> tuple:
    """Train on one split, test on the other, measure `unknown`; the model, and the files kept beside it: the
    evaluation, and the regression's, the PCA's and the open-set score's parameters as plain arrays (the PCA the
    features were projected with)."""
    spark = pyspark.spark_session
    k = json.loads(models.file("pca_model", "fit.json", pca_folder))["k"]

    def trained_and_scored() -> tuple:
        with job_description(spark, "fruit_classifier: train and test"):
            table = with_class(tables.read(PROJECTED, version), class_index)
            train, test, how = train_test(table, config.holdout_share, config.seed)
            model = fit_classifier(train, config.reg_param)
            evaluation = evaluate(model, test, len(labels))
            train_images = int(train.count())
        with job_description(spark, "fruit_classifier: which fruit, or none"):
            gaussians = class_gaussians(train, len(labels))
            arrays = {**parameters(model), "means": gaussians.means, "precision": gaussians.precision}
            scores = scored(with_halves(test, config.seed), arrays).toPandas()  # the test split: bounded by its share
        return model, evaluation, how, train_images, arrays, scores

    with job_description(spark, "fruit_classifier: leave classes out"):
        leave_out = leave_classes_out(
            tables.read(FEATURES), labels, config.unknown_folds, config.fold_rows, k, config.seed
        )

    def described(fit: Callable[[], dict]) -> Callable[[], dict]:
        def run() -> dict:
            with job_description(spark, "fruit_classifier: leave classes out"):
                return fit()

        return run

    # The classifier's fit and the leave-classes-out fits side by side: each is hundreds of tiny Spark jobs.
    fits = [described(fit) for fit in leave_out.fits(spark, config.reg_param)]
    trained, *fitted = side_by_side(spark, [trained_and_scored, *fits])
    model, evaluation, how, train_images, arrays, scores = trained
    folds = leave_out.folds(fitted, config.known_share)
    open_set = _open_set_figures(scores, folds, config.known_share)
    pca = projection_of(models, pca_folder)
    arrays |= {
        "mean": pca.mean,
        "std": pca.std,
        "components": pca.components,
        "unknown_rule": np.array(RULE),
        "unknown_thresholds": np.array([open_set["rule_thresholds"][name] for name in RULE]),
        "labels": np.array(labels),
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    figures = {
        "confusion": evaluation.confusion.tolist(),
        "how": how,
        "train_images": train_images,
        "open_set": open_set,
    }
    return model, {PARAMETERS: buffer.getvalue(), EVALUATION: json.dumps(figures).encode()}


def _open_set_figures(scores, folds: list[Fold], share: float) -> dict:
    """The threshold of each score alone, and the rule's, on the calibration half of the test photos, what they
    keep of the other half, and the leave-classes-out figures; the rule's thresholds are the ones the models
    apply."""
    calibration, evaluation = scores[scores[HALF]], scores[~scores[HALF]]
    if calibration.empty or evaluation.empty:  # too few test photos to halve: both halves are all of them
        calibration = evaluation = scores
    right = (evaluation["prediction"] == evaluation[CLASS_COL]).to_numpy()
    cuts = {name: threshold(calibration[name].to_numpy(), share) for name in SCORES}
    kept = {n: float(((evaluation[n].to_numpy() >= cuts[n]) & right).mean()) for n in SCORES}
    rule = rule_thresholds({name: calibration[name].to_numpy() for name in RULE}, share)
    answered = ~answered_unknown({name: evaluation[name].to_numpy() for name in RULE}, rule)
    return {
        "score": CHOSEN,
        "rule_thresholds": rule,
        "known_share": share,
        "calibration_photos": len(calibration),
        "evaluation_photos": len(evaluation),
        "known_named_right": kept | {CHOSEN: float((answered & right).mean())},
        "thresholds": cuts,
        "folds": [asdict(fold) for fold in folds],
    }


@asset(
    io_manager_key=MODEL_IO_MANAGER,
    group_name="classification",
    kinds={"tensorflow", "tflite"},
    deps=[CLASSIFIER],
    automation_condition=ON_NEW_DATA,
    pool=POOL,
    retry_policy=TRANSIENT_FAILURES,
)
@retried_only_if_transient
def phone_model(context: AssetExecutionContext, models: ModelStore, run_guard: RunGuard) -> Output:
    """`fruits_classifier.tflite` and `labels.json`: one LiteRT model from RGB pixels to class probabilities.

    Normalization, MobileNetV2, the scaler, the PCA and the classifier, in one graph
    converted from Keras (or the last model with its head's constants replaced, when
    only they differ: `vision/phone.py`), built from the exact classifier version it
    names (and the PCA that classifier was trained on), as a version folder behind `current.json`.
    No Spark: it runs where TensorFlow is, the orchestrating host on EMR.
    `fruits identify` runs it.
    """
    classifier = models.current_folder(CLASSIFIER)
    if classifier is None:
        raise Failure(
            f"no {CLASSIFIER} under {models.locations.storage_root}: materialize it first", allow_retries=False
        )
    made_from = {CLASSIFIER: classifier}
    version = DataVersion(version_folder(made_from))
    if models.made_from(PHONE) == made_from:  # built from this very classifier already
        return Output(FittedModel(None, made_from), data_version=version, metadata={"classifier": classifier})
    with np.load(io.BytesIO(models.file(CLASSIFIER, PARAMETERS, classifier))) as saved:
        arrays = {name: saved[name] for name in saved.files}
    labels = [str(label) for label in arrays["labels"]]
    last = models.current_folder(PHONE)
    last_layout = models.file(PHONE, LAYOUT_FILE, last) if last else None
    flatbuffer, layout, patched = phone_flatbuffer(
        arrays,
        models.file(PHONE, MODEL_FILE, last) if last_layout else None,
        json.loads(last_layout) if last_layout else None,
    )
    cuts = dict(zip(arrays["unknown_rule"].tolist(), arrays["unknown_thresholds"].tolist(), strict=True))
    files = {MODEL_FILE: flatbuffer, LABELS_FILE: labels_json(labels, cuts)}
    if layout is not None:
        files[LAYOUT_FILE] = json.dumps(layout).encode()
    check = PhoneModel.from_files(files[MODEL_FILE], files[LABELS_FILE])  # the file loads and answers
    white = check.answer(np.full((224, 224, 3), 255, dtype=np.uint8))  # a blank page is no fruit
    return Output(
        FittedModel(None, made_from, files),
        data_version=version,
        metadata={
            "classifier": classifier,
            "model_bytes": len(flatbuffer),
            "built": "the last model, its head's constants replaced" if patched else "converted from Keras",
            "classes": len(labels),
            "input": "float32 [1, 224, 224, 3], RGB 0..255",
            "outputs": f"float32 [1, {len(labels)}] probabilities in labels.json's order; float32 [1, 1] known score",
            "unknown_thresholds": MetadataValue.json(cuts),
            "probabilities_sum_on_white": float(white.probabilities.sum()),
            "white_page_answered_unknown": white.unknown,
        },
    )
