"""A first fruit classifier on the PCA features: Spark MLlib's multinomial logistic regression, and its evaluation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyspark import SparkContext
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import LogisticRegression, LogisticRegressionModel
from pyspark.ml.feature import VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

VECTOR_COL, CLASS_COL = "pcs", "class_id"
TRAIN, TEST = "Training", "Test"


def components(table: DataFrame) -> list[str]:
    return [c for c in table.columns if c.startswith("pc_")]


def drawn(seed: int, *salt: str) -> Column:
    """A seeded hash of what names a photo wherever the tree lies (its split, label and file name, not the images
    root): the same photos draw the same hold-out and halves on a laptop, a cluster or S3."""
    name = F.element_at(F.split(F.col("path"), "/"), -1)
    return F.xxhash64(F.coalesce(F.col("split"), F.lit("")), F.col("label"), name, *map(F.lit, salt), F.lit(seed))


def with_class(table: DataFrame, class_index: dict[str, int]) -> DataFrame:
    """The rows whose label the class index names, with its id as `class_id` (a double, as MLlib wants)."""
    mapping = F.create_map(*[F.lit(x) for pair in class_index.items() for x in pair])
    return table.withColumn(CLASS_COL, mapping[F.col("label")].cast("double")).filter(F.col(CLASS_COL).isNotNull())


def train_test(table: DataFrame, holdout_share: float, seed: int) -> tuple[DataFrame, DataFrame, str]:
    """The `Training` and `Test` splits when the tree has both; else a seeded, stratified hold-out.

    The hold-out ranks each label's images by a hash of their name and the seed (`drawn`:
    no randomness that depends on partitioning or on where the tree lies), and keeps the
    last `holdout_share` of every label for testing: the same tree and seed give the
    same split.
    """
    splits = {r["split"] for r in table.select("split").distinct().collect()}
    if {TRAIN, TEST} <= splits:
        return table.filter(F.col("split") == TRAIN), table.filter(F.col("split") == TEST), "Training/Test splits"
    order = Window.partitionBy("label").orderBy(drawn(seed), "path")
    ranked = table.withColumn("_rank", F.percent_rank().over(order))
    held = F.col("_rank") >= 1 - holdout_share
    return (
        ranked.filter(~held).drop("_rank"),
        ranked.filter(held).drop("_rank"),
        f"stratified hold-out of {holdout_share:.0%} per label (seed {seed})",
    )


def fit_classifier(train: DataFrame, reg_param: float) -> PipelineModel:
    """The PCA components assembled into a vector, then multinomial logistic regression."""
    assembler = VectorAssembler(inputCols=components(train), outputCol=VECTOR_COL)
    regression = LogisticRegression(
        featuresCol=VECTOR_COL, labelCol=CLASS_COL, family="multinomial", regParam=reg_param, maxIter=200
    )
    fitted = Pipeline(stages=[assembler, regression]).fit(train)
    return PipelineModel([fitted.stages[0], _without_summary(fitted.stages[-1])])


def _without_summary(model: LogisticRegressionModel) -> LogisticRegressionModel:
    """The same model without its training summary.

    Spark 4.0's summary holds the session, and a session that has run an observed
    query no longer serializes: such a model fails every `transform` ("Task not
    serializable"). A model loaded from disk has no summary either.
    """
    java = model._java_obj
    jvm = SparkContext._active_spark_context._jvm
    bare = jvm.org.apache.spark.ml.classification.LogisticRegressionModel(
        java.uid(),
        java.coefficientMatrix(),
        java.interceptVector(),
        java.numClasses(),
        True,  # multinomial
    )
    copy = model._copyValues(LogisticRegressionModel(bare))
    copy._transfer_params_to_java()
    return copy


@dataclass(frozen=True)
class Evaluation:
    """The classifier on the test images: a confusion matrix (rows: true class, columns: predicted) and
    what follows from it."""

    confusion: np.ndarray

    @property
    def accuracy(self) -> float:
        total = self.confusion.sum()
        return float(np.trace(self.confusion) / total) if total else 0.0

    @property
    def precision(self) -> np.ndarray:
        predicted = self.confusion.sum(axis=0)
        return np.divide(np.diag(self.confusion), predicted, out=np.zeros(len(predicted)), where=predicted > 0)

    @property
    def recall(self) -> np.ndarray:
        actual = self.confusion.sum(axis=1)
        return np.divide(np.diag(self.confusion), actual, out=np.zeros(len(actual)), where=actual > 0)

    @property
    def f1(self) -> np.ndarray:
        p, r = self.precision, self.recall
        return np.divide(2 * p * r, p + r, out=np.zeros(len(p)), where=(p + r) > 0)

    @property
    def macro_f1(self) -> float:
        """The mean F1 of the classes the test set holds."""
        present = self.confusion.sum(axis=1) > 0
        return float(self.f1[present].mean()) if present.any() else 0.0


def evaluate(model: PipelineModel, test: DataFrame, classes: int) -> Evaluation:
    """Counts of (true class, predicted class) over the test images, in one Spark job."""
    counts = model.transform(test).groupBy(CLASS_COL, "prediction").count().collect()
    confusion = np.zeros((classes, classes), dtype=np.int64)
    for row in counts:
        confusion[int(row[CLASS_COL]), int(row["prediction"])] = row["count"]
    return Evaluation(confusion)


def probabilities(model: PipelineModel, table: DataFrame) -> DataFrame:
    """`path` and the class probabilities the Spark model gives each row."""
    return model.transform(table).select("path", vector_to_array("probability").alias("probabilities"))


def parameters(model: PipelineModel) -> dict[str, np.ndarray]:
    """The regression's weights (classes x components) and intercepts, as plain arrays."""
    regression = model.stages[-1]
    return {
        "coefficients": regression.coefficientMatrix.toArray(),
        "intercepts": regression.interceptVector.toArray(),
    }
