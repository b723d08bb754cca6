"""The open-set scores in Spark: the classes' Gaussians from the training rows, every test photo's scores, and the
leave-classes-out measurement (train without some classes, see whether their photos are answered `unknown`).

The arithmetic is `vision/openset.py`'s; here it runs over tables. The classes'
moments are summed on the executors (at most `DRIVER_SUMS` k-by-k matrices reach the driver); a fold
of the leave-classes-out measurement works on a bounded sample (`fold_rows`), with
the same PCA recipe and the same MLlib logistic regression as the real classifier.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fruits_assets.spark.classifier import CLASS_COL, components, drawn, fit_classifier, parameters
from fruits_assets.spark.moments import Moments, summed_on_executors
from fruits_assets.spark.pca import canonical_signs, mean_std_and_spectrum
from fruits_assets.vision.mobilenet import FEATURE_DIM
from fruits_assets.vision.openset import (
    CHOSEN,
    DISTANCE_COMPONENTS,
    RULE,
    SCORES,
    ClassGaussians,
    answered_unknown,
    auroc,
    known_scores,
    rule_thresholds,
    threshold,
)

HALF = "_calibration"  # a test photo's half: True for the calibration half, False for the evaluation half


def with_halves(table: DataFrame, seed: int) -> DataFrame:
    """Each row marked calibration or evaluation, half and half, by a hash of its name (the same every run)."""
    return table.withColumn(HALF, F.pmod(drawn(seed, "half"), F.lit(2)) == 0)


def class_gaussians(train: DataFrame, classes: int) -> ClassGaussians:
    """Each class's mean and the pooled covariance of the leading `pc_*` columns of the training rows."""
    names = components(train)[:DISTANCE_COMPONENTS]
    k = len(names)

    def partial_moments(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        counts, sums, cross = np.zeros(classes), np.zeros((classes, k)), np.zeros((k, k))
        for batch in batches:
            z = np.column_stack([batch.column(n).to_numpy() for n in names]) if batch.num_rows else np.empty((0, k))
            y = batch.column(CLASS_COL).to_numpy().astype(int)
            np.add.at(counts, y, 1)
            np.add.at(sums, y, z)
            cross += z.T @ z
        blob = np.concatenate([counts, sums.ravel(), cross.ravel()]).astype(np.float64).tobytes()
        yield pa.RecordBatch.from_pydict({"moments": [blob]})

    parts = train.select(*names, CLASS_COL).mapInArrow(partial_moments, "moments binary").rdd.map(lambda r: bytes(r[0]))
    total = np.frombuffer(summed_on_executors(parts, _add_blobs), dtype=np.float64)
    counts, rest = total[:classes], total[classes:]
    return ClassGaussians.from_moments(
        counts, rest[: classes * k].reshape(classes, k), rest[classes * k :].reshape(k, k)
    )


def _add_blobs(a: bytes, b: bytes) -> bytes:
    return (np.frombuffer(a, dtype=np.float64) + np.frombuffer(b, dtype=np.float64)).tobytes()


def scored(table: DataFrame, arrays: dict[str, np.ndarray]) -> DataFrame:
    """`path, label, split, class_id, prediction` and the four scores of each row of a `pc_*` table, from the
    classifier's parameters (`coefficients`, `intercepts`) and the Gaussians (`means`, `precision`)."""
    names = components(table)
    gaussians = ClassGaussians(arrays["means"], arrays["precision"])
    coefficients, intercepts = arrays["coefficients"], arrays["intercepts"]
    keep = [c for c in ("path", "label", "split", CLASS_COL, HALF) if c in table.columns]
    schema = ", ".join(
        [f"`{c}` {dict(table.dtypes)[c]}" for c in keep] + ["prediction int", *(f"{s} double" for s in SCORES)]
    )

    def batches(frames: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for frame in frames:
            z = (
                np.column_stack([frame.column(n).to_numpy() for n in names])
                if frame.num_rows
                else np.empty((0, len(names)))
            )
            logits = z @ coefficients.T + intercepts
            scores = known_scores(z, logits, gaussians)
            columns = [frame.column(c) for c in keep] + [pa.array(logits.argmax(axis=1).astype(np.int32))]
            columns += [pa.array(scores[s]) for s in SCORES]
            yield pa.RecordBatch.from_arrays(columns, names=[*keep, "prediction", *SCORES])

    return table.select(*keep, *names).mapInArrow(batches, schema)


@dataclass(frozen=True)
class Fold:
    """What one way of leaving classes out gave: per score alone and for the rule (`CHOSEN`), the left-out photos
    answered `unknown` and the known evaluation photos named right and answered; per score, the AUROC between the
    two."""

    left_out: list[str]
    unknown: dict[str, float]
    known_right: dict[str, float]
    auroc: dict[str, float]
    photos_left_out: int
    photos_known: int


def leave_classes_out(
    features: DataFrame, labels: list[str], folds: int, fold_rows: int, k: int, seed: int
) -> LeaveOut:
    """The ways to train without some classes, as the pipeline trains, and measure how their photos are answered:
    each fold leaves out every `folds`-th class (classes in order), on a sample of at most `fold_rows` feature rows,
    projected with a PCA of `k` components (the pipeline's) fitted without them. The fits are left to the caller
    (`LeaveOut.fits`), to run beside other Spark work: the spectra here are numpy's on the driver, and BLAS's
    threads ran five times slower beside Spark's tasks than alone (10 s against 1.3 s for three folds)."""
    per_class = max(10, fold_rows // max(len(labels), 1))
    counts = {r["label"]: r["count"] for r in features.groupBy("label").count().collect()}
    fractions = {label: min(1.0, per_class / n) for label, n in counts.items() if label in labels}
    # Drawn by a hash of each photo's name (`drawn`), and in path order: the same rows whatever the table's files
    # or where the tree lies (an incremental table and a fresh one give the same folds, bit for bit).
    share = F.create_map(*[F.lit(x) for pair in fractions.items() for x in pair])[F.col("label")]
    sample = with_halves(features.filter(F.pmod(drawn(seed), F.lit(1_000_000)) < share * 1_000_000), seed).select(
        "path", "label", "split", "features", HALF, (F.pmod(drawn(seed, "test"), F.lit(5)) == 0).alias("_test")
    )
    rows = sample.toPandas().sort_values("path", ignore_index=True)
    x = np.stack(rows["features"].to_numpy()).astype(np.float64) if len(rows) else np.empty((0, FEATURE_DIM))
    half = rows[HALF].to_numpy(dtype=bool)
    train, test = (rows["split"] == "Training").to_numpy(), (rows["split"] == "Test").to_numpy()
    if not train.any() or not test.any():  # no splits: a fifth held out, by a hash of the name as the hold-out
        test = rows["_test"].to_numpy(dtype=bool)
        train = ~test
    ways = []
    for fold in range(min(folds, len(labels))):
        left = labels[fold::folds]
        out = rows["label"].isin(left).to_numpy()
        kept = [label for label in labels if label not in left]
        if len(kept) >= 2 and out.any() and (way := _way(x, rows, train, test, half, out, kept, left, k)):
            ways.append(way)
    return LeaveOut(ways, half)


@dataclass(frozen=True)
class _Way:
    """One way of leaving classes out: the sample projected with a PCA fitted without them (`z`), each row's class
    id among the kept classes (`y`, NaN for the left-out), and which rows fit, test and are left out."""

    left: list[str]
    kept: list[str]
    out: np.ndarray
    fit: np.ndarray
    known_test: np.ndarray
    z: np.ndarray
    y: np.ndarray


def _way(x, rows, train, test, half, out, kept, left, k) -> _Way | None:
    """None when the sample is too small to measure this way (no training rows, or no known test photo in one of
    the halves)."""
    fit = train & ~out
    known_test = test & ~out
    if not fit.any() or not (known_test & half).any() or not (known_test & ~half).any():
        return None
    n = int(fit.sum())
    moments = Moments(n, x[fit].sum(axis=0), x[fit].T @ x[fit])
    mean, std, eigenvalues, eigenvectors = mean_std_and_spectrum(moments)
    k = min(k, len(eigenvalues))
    basis = eigenvectors[:, :k] * canonical_signs(eigenvectors[:, :k])
    scale = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 0.0)
    z = ((x - mean) * scale) @ basis
    y = rows["label"].map({label: i for i, label in enumerate(kept)}).to_numpy()
    return _Way(left, kept, out, fit, known_test, z, y)


@dataclass(frozen=True)
class LeaveOut:
    """The ways of leaving classes out, projected (`leave_classes_out`): their fits, then what each measured."""

    ways: list[_Way]
    half: np.ndarray

    def fits(self, spark: SparkSession, reg_param: float) -> list[Callable[[], dict[str, np.ndarray]]]:
        """One call per way: the pipeline's logistic regression on its training rows (Spark jobs), its parameters."""
        return [partial(_fitted, spark, way, reg_param) for way in self.ways]

    def folds(self, fitted: list[dict[str, np.ndarray]], known_share: float) -> list[Fold]:
        """What each way measured, from its fit's parameters (in the order of `fits`)."""
        return [_measured(way, arrays, self.half, known_share) for way, arrays in zip(self.ways, fitted, strict=True)]


def _fitted(spark: SparkSession, way: _Way, reg_param: float) -> dict[str, np.ndarray]:
    """The pipeline's logistic regression on the way's training rows: its parameters."""
    z, k = way.z[way.fit], way.z.shape[1]
    frame = pd.DataFrame(z, columns=[f"pc_{i + 1}" for i in range(k)]).assign(
        **{CLASS_COL: way.y[way.fit].astype(float)}
    )
    # A fold's few thousand rows in one partition: each of the fit's iterations is then one task, not one per core
    # (the folds already run side by side). 2.1 s a fold against 4.6 s, the same parameters.
    return parameters(fit_classifier(spark.createDataFrame(frame).coalesce(1), reg_param))


def _measured(way: _Way, arrays: dict[str, np.ndarray], half: np.ndarray, known_share: float) -> Fold:
    """How the classifier fitted without the way's classes answers their photos, and the known ones."""
    z, y, fit, out, known_test, kept = way.z, way.y, way.fit, way.out, way.known_test, way.kept
    fit_z, fit_y = z[fit][:, :DISTANCE_COMPONENTS], y[fit].astype(int)
    sums = np.stack([fit_z[fit_y == c].sum(axis=0) for c in range(len(kept))])
    gaussians = ClassGaussians.from_moments(
        np.bincount(fit_y, minlength=len(kept)).astype(float), sums, fit_z.T @ fit_z
    )
    logits = z @ arrays["coefficients"].T + arrays["intercepts"]
    scores = known_scores(z, logits, gaussians)
    calibration, evaluation = known_test & half, known_test & ~half
    right = np.zeros(len(y), dtype=bool)
    right[known_test] = logits[known_test].argmax(axis=1) == y[known_test]
    unknown, known_right, areas = {}, {}, {}
    for name in SCORES:
        cut = threshold(scores[name][calibration], known_share)
        unknown[name] = float((scores[name][out] < cut).mean())
        known_right[name] = float(((scores[name][evaluation] >= cut) & right[evaluation]).mean())
        areas[name] = auroc(scores[name][evaluation], scores[name][out])
    cuts = rule_thresholds({name: scores[name][calibration] for name in RULE}, known_share)
    unknown[CHOSEN] = float(answered_unknown({n: scores[n][out] for n in RULE}, cuts).mean())
    answered = ~answered_unknown({n: scores[n][evaluation] for n in RULE}, cuts)
    known_right[CHOSEN] = float((answered & right[evaluation]).mean())
    return Fold(way.left, unknown, known_right, areas, int(out.sum()), int(evaluation.sum()))
