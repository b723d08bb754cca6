"""StandardScaler + PCA in Spark MLlib, k chosen by explained variance."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pyspark import SparkContext
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.common import _py2java
from pyspark.ml.feature import PCA, PCAModel, StandardScaler
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.ml.linalg import DenseMatrix
from pyspark.ml.stat import Correlation
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

VECTOR_COL, SCALED_COL, PCA_COL = "vector", "scaled", "pca"


def choose_k(explained: Sequence[float], target: float) -> int:
    """The smallest k whose cumulative explained variance reaches `target`."""
    if not 0 < target <= 1:
        raise ValueError(f"variance target must be in (0, 1], got {target}")
    cumulative = np.cumsum(np.asarray(explained, dtype=float))
    reached = np.flatnonzero(cumulative >= target - 1e-12)
    return int(reached[0]) + 1 if reached.size else len(cumulative)


def with_vector(features: DataFrame) -> DataFrame:
    """The `features` array as an MLlib dense vector (no Python UDF involved)."""
    return features.withColumn(VECTOR_COL, array_to_vector("features"))


def explained_variance_spectrum(vectors: DataFrame) -> list[float]:
    """Explained variance ratio of every principal component of the standardized data, largest first.

    The covariance of standardized data is the features' correlation matrix: MLlib
    computes it in one pass, and its eigenvalues (a small dense problem on the
    driver) give the whole curve without fitting PCA with every component.
    Constant features, which the scaler maps to 0, contribute no variance.
    """
    corr = Correlation.corr(vectors, VECTOR_COL).head()[0].toArray()
    # MLlib leaves a constant feature's correlations NaN but its diagonal 1: it has no variance.
    off_diagonal = np.where(np.eye(len(corr), dtype=bool), np.nan, corr)
    constant = np.isnan(off_diagonal).all(axis=1)
    corr[constant, :] = corr[:, constant] = 0.0
    eigenvalues = np.clip(np.linalg.eigvalsh(np.nan_to_num(corr, nan=0.0))[::-1], 0.0, None)
    return (eigenvalues / eigenvalues.sum()).tolist()


def canonical_signs(components: np.ndarray) -> np.ndarray:
    """±1 per column so that each component's largest loading (the first, on ties) is positive.

    A principal component is only defined up to its sign; fixing it makes two
    fits of the same data give the same projection.
    """
    largest = np.abs(components).argmax(axis=0)
    signs = np.sign(components[largest, np.arange(components.shape[1])])
    return np.where(signs == 0, 1.0, signs)


def with_canonical_signs(model: PCAModel) -> PCAModel:
    """The same PCA model with each component's sign fixed by `canonical_signs`."""
    components = model.pc.toArray()
    oriented = components * canonical_signs(components)
    rows, cols = oriented.shape
    sc = SparkContext._active_spark_context
    java_pc = _py2java(sc, DenseMatrix(rows, cols, oriented.flatten(order="F").tolist()))
    java_model = sc._jvm.org.apache.spark.ml.feature.PCAModel(model.uid, java_pc, _py2java(sc, model.explainedVariance))
    canonical = model._copyValues(PCAModel(java_model))
    canonical._transfer_params_to_java()
    return canonical


def fit_pca(features: DataFrame, k: int | None, variance_target: float) -> tuple[PipelineModel, list[float]]:
    """Fit StandardScaler then PCA; with no k, the smallest reaching `variance_target`.

    Components get canonical signs. Returns the model and the explained variance
    ratio of every component the data has (so the curve can be shown beyond k).
    """
    vectors = with_vector(features).select(VECTOR_COL).persist()
    try:
        spectrum = explained_variance_spectrum(vectors)
        chosen = k if k is not None else choose_k(spectrum, variance_target)
        if not 1 <= chosen <= len(spectrum):
            raise ValueError(f"k must be between 1 and {len(spectrum)}, got {chosen}")
        scaler = StandardScaler(inputCol=VECTOR_COL, outputCol=SCALED_COL, withMean=True, withStd=True)
        pca = PCA(k=chosen, inputCol=SCALED_COL, outputCol=PCA_COL)
        scaler_model, pca_model = Pipeline(stages=[scaler, pca]).fit(vectors).stages
        model = PipelineModel([scaler_model, with_canonical_signs(pca_model)])
    finally:
        vectors.unpersist()
    return model, spectrum


def pca_k(model: PipelineModel) -> int:
    return int(model.stages[-1].getK())


def explained_variance(model: PipelineModel) -> list[float]:
    return [float(v) for v in model.stages[-1].explainedVariance]


def project(model: PipelineModel, features: DataFrame) -> DataFrame:
    """`path, label, split, pc_1 … pc_k`, ordered by path."""
    k = pca_k(model)
    pcs = vector_to_array(F.col(PCA_COL))
    scored = model.transform(with_vector(features))
    return scored.select("path", "label", "split", *[pcs[i].alias(f"pc_{i + 1}") for i in range(k)]).orderBy("path")
