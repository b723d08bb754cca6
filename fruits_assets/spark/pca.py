"""StandardScaler + PCA as Spark MLlib models, fitted from the features' moments, k chosen by explained variance.

MLlib's StandardScaler (sample standard deviation, a constant feature scaled to 0)
followed by MLlib's PCA (eigenvectors of the scaled data's covariance, explained
variance as eigenvalues over their sum) is a function of the moments alone: the
models are built from them here, with the numbers MLlib's own fit gives (the tests
compare), so a refit costs a 1280x1280 eigendecomposition, whatever the row count.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from pyspark import SparkContext
from pyspark.ml import PipelineModel
from pyspark.ml.common import _py2java
from pyspark.ml.feature import PCAModel, StandardScalerModel
from pyspark.ml.functions import array_to_vector
from pyspark.ml.linalg import DenseMatrix, DenseVector
from pyspark.sql import DataFrame

from fruits_assets.spark.moments import Moments, matrix
from fruits_assets.spark.worker_files import WorkerFiles, map_in_arrow

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


def mean_std_and_spectrum(moments: Moments) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean, sample standard deviation, and the scaled data's covariance eigenvalues (descending) and vectors."""
    n = moments.count
    if n < 1:
        raise ValueError("no features to fit PCA on")
    mean = moments.sums / n
    covariance = (moments.cross - n * np.outer(mean, mean)) / max(n - 1, 1)
    std = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    varies = std > 0
    scale = np.where(varies, std, 1.0)
    correlation = np.where(np.outer(varies, varies), covariance / np.outer(scale, scale), 0.0)
    eigenvalues, eigenvectors = np.linalg.eigh((correlation + correlation.T) / 2)
    order = np.argsort(eigenvalues)[::-1]
    return mean, std, np.clip(eigenvalues[order], 0.0, None), eigenvectors[:, order]


def _java(value) -> object:
    return _py2java(SparkContext._active_spark_context, value)


def fit_pca(moments: Moments, k: int | None, variance_target: float) -> tuple[PipelineModel, list[float]]:
    """StandardScaler then PCA from the moments; with no k, the smallest reaching `variance_target`.

    Returns the model and the explained variance ratio of every component the data
    has (so the curve can be shown beyond k). Components have canonical signs.
    Constant features, which the scaler maps to 0, explain no variance.
    """
    mean, std, eigenvalues, eigenvectors = mean_std_and_spectrum(moments)
    total = eigenvalues.sum()
    spectrum = [float(v) for v in (eigenvalues / total if total > 0 else eigenvalues)]
    chosen = k if k is not None else choose_k(spectrum, variance_target)
    if not 1 <= chosen <= len(spectrum):
        raise ValueError(f"k must be between 1 and {len(spectrum)}, got {chosen}")
    components = eigenvectors[:, :chosen] * canonical_signs(eigenvectors[:, :chosen])
    jvm = SparkContext._active_spark_context._jvm
    scaler = StandardScalerModel(
        jvm.org.apache.spark.ml.feature.StandardScalerModel(
            "fruits_scaler", _java(DenseVector(std)), _java(DenseVector(mean))
        )
    )
    scaler._set(inputCol=VECTOR_COL, outputCol=SCALED_COL, withMean=True, withStd=True)
    scaler._transfer_params_to_java()
    rows, cols = components.shape
    matrix = _java(DenseMatrix(rows, cols, components.flatten(order="F").tolist()))
    explained = _java(DenseVector(spectrum[:chosen]))
    pca = PCAModel(jvm.org.apache.spark.ml.feature.PCAModel("fruits_pca", matrix, explained))
    pca._set(k=chosen, inputCol=SCALED_COL, outputCol=PCA_COL)
    pca._transfer_params_to_java()
    return PipelineModel([scaler, pca]), spectrum


def pca_k(model: PipelineModel) -> int:
    return int(model.stages[-1].getK())


@dataclass(frozen=True)
class Projection:
    """What `project` needs of a fitted scaler and PCA, as plain arrays: kept beside the model, so a projection
    loads no Spark ML model (five small Spark jobs a load)."""

    mean: np.ndarray
    std: np.ndarray
    components: np.ndarray  # features x k

    @classmethod
    def of(cls, model: PipelineModel) -> Projection:
        scaler, pca = model.stages
        return cls(scaler.mean.toArray(), scaler.std.toArray(), pca.pc.toArray())

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, mean=self.mean, std=self.std, components=self.components)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Projection:
        with np.load(io.BytesIO(data)) as saved:
            return cls(saved["mean"], saved["std"], saved["components"])


def project(projection: Projection, features: DataFrame | WorkerFiles) -> DataFrame:
    """`path, label, split, pc_1 … pc_k` (float64): each row through the model's scaler and components.

    What MLlib's `transform` computes (a feature of zero deviation scales to 0), as one
    matrix product per Arrow batch in the Python workers, the features read straight
    from Arrow's buffers, instead of a vector per row through three transformers and k
    column extractions.
    """
    mean, std, components = projection.mean, projection.std, projection.components
    scale = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 0.0)
    names = [f"pc_{i + 1}" for i in range(components.shape[1])]
    schema = ", ".join([*(f"{c} string" for c in ID_COLUMNS), *(f"{n} double" for n in names)])

    def batches(frames: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for frame in frames:
            x = matrix(frame.column("features"), len(mean)) if frame.num_rows else np.empty((0, len(mean)))
            pcs = ((x - mean) * scale) @ components
            columns = [frame.column(c) for c in ID_COLUMNS] + [pa.array(pcs[:, i]) for i in range(len(names))]
            yield pa.RecordBatch.from_arrays(columns, names=ID_COLUMNS + names)

    return map_in_arrow(features, [*ID_COLUMNS, "features"], batches, schema)
