"""StandardScaler + PCA in Spark MLlib, k chosen by explained variance."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pyspark import SparkContext
from pyspark.ml import PipelineModel
from pyspark.ml.common import _py2java
from pyspark.ml.feature import PCA, PCAModel, StandardScaler
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.ml.linalg import DenseMatrix, DenseVector
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

VECTOR_COL, SCALED_COL, PCA_COL = "vector", "scaled", "pca"
ID_COLUMNS = ["path", "label", "split"]


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


def canonical_signs(components: np.ndarray) -> np.ndarray:
    """±1 per column so that each component's largest loading (the first, on ties) is positive.

    A principal component is only defined up to its sign; fixing it makes two
    fits of the same data give the same projection.
    """
    largest = np.abs(components).argmax(axis=0)
    signs = np.sign(components[largest, np.arange(components.shape[1])])
    return np.where(signs == 0, 1.0, signs)


def first_components(model: PCAModel, k: int) -> PCAModel:
    """The PCA model of the first `k` components of `model`, each with its sign fixed by `canonical_signs`.

    MLlib's PCA decomposes the whole covariance matrix whatever k and keeps the
    first k components and their explained variance: cutting a fit with every
    component gives the model a fit with k gives, and one fit yields the whole curve.
    """
    components = model.pc.toArray()[:, :k]
    oriented = components * canonical_signs(components)
    rows, cols = oriented.shape
    sc = SparkContext._active_spark_context
    java_pc = _py2java(sc, DenseMatrix(rows, cols, oriented.flatten(order="F").tolist()))
    java_explained = _py2java(sc, DenseVector(model.explainedVariance.toArray()[:k]))
    java_model = sc._jvm.org.apache.spark.ml.feature.PCAModel(model.uid, java_pc, java_explained)
    cut = model._copyValues(PCAModel(java_model))
    cut._set(k=k)
    cut._transfer_params_to_java()
    return cut


def fit_pca(features: DataFrame, k: int | None, variance_target: float) -> tuple[PipelineModel, list[float]]:
    """Fit StandardScaler then PCA; with no k, the smallest reaching `variance_target`.

    PCA is fitted once with every component, then cut to k (see `first_components`),
    with canonical signs. Returns the model and the explained variance ratio of
    every component the data has (so the curve can be shown beyond k). Constant
    features, which the scaler maps to 0, explain no variance.
    """
    vectors = with_vector(features).select(VECTOR_COL).persist()
    try:
        scaler = StandardScaler(inputCol=VECTOR_COL, outputCol=SCALED_COL, withMean=True, withStd=True).fit(vectors)
        every = PCA(k=scaler.mean.size, inputCol=SCALED_COL, outputCol=PCA_COL).fit(scaler.transform(vectors))
        spectrum = [float(v) for v in every.explainedVariance]
        chosen = k if k is not None else choose_k(spectrum, variance_target)
        if not 1 <= chosen <= len(spectrum):
            raise ValueError(f"k must be between 1 and {len(spectrum)}, got {chosen}")
        model = PipelineModel([scaler, first_components(every, chosen)])
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
    return scored.select(*ID_COLUMNS, *[pcs[i].alias(f"pc_{i + 1}") for i in range(k)]).orderBy("path")
