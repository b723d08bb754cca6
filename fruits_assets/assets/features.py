"""MobileNetV2 features of every labeled image, computed once and stored as Parquet."""

import math
import time
from collections.abc import Iterator

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetIn,
    AssetObservation,
    Config,
    Output,
    asset,
    asset_check,
)
from dagster_pyspark import LazyPySparkResource
from pydantic import Field
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fruits_assets.assets.images import SPARK_PARQUET
from fruits_assets.resources.spark import DEFAULT_ARROW_BATCH
from fruits_assets.spark.featurize import features_column
from fruits_assets.spark.progress import job_description, progress_lines
from fruits_assets.vision.engines import DEFAULT_ENGINE, ENGINES
from fruits_assets.vision.mobilenet import FEATURE_DIM

PROGRESS_EVERY_SECONDS = 10.0
IMAGES_PER_TASK = 256  # small tasks: even load on every core, and progress as they finish


class FeaturizationConfig(Config):
    engine: str = Field(default=DEFAULT_ENGINE, description=f"Feature engine: one of {', '.join(ENGINES)}.")
    batch_size: int = Field(default=4, ge=1, description="Images per model call (small batches stay in cache).")
    arrow_batch_size: int = Field(
        default=DEFAULT_ARROW_BATCH, ge=1, description="Rows per Arrow batch sent to the Python workers."
    )


@asset(io_manager_key=SPARK_PARQUET, group_name="features", kinds={"spark", "tensorflow", "parquet"})
def mobilenet_features(
    context: AssetExecutionContext,
    config: FeaturizationConfig,
    pyspark: LazyPySparkResource,
    raw_images: DataFrame,
    labeled_images: DataFrame,
) -> Iterator[Output[DataFrame] | AssetObservation]:
    """`path, label, split, features`: the 1280-d MobileNetV2 (ImageNet) penultimate layer of each image.

    Features are computed by the IO manager's single write; nothing downstream
    recomputes them, it reads the stored Parquet dataset. Once written, the
    workers' timers are recorded as an observation: throughput and where time went.
    """
    spark = pyspark.spark_session
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(config.arrow_batch_size))
    images = labeled_images.count()
    slots = spark.sparkContext.defaultParallelism
    tasks = slots * max(1, math.ceil(images / (slots * IMAGES_PER_TASK)))
    labels = labeled_images.select("path", "label", "split")
    to_featurize = raw_images.select("path", "content").join(F.broadcast(labels), "path").repartition(tasks)
    features, counters = features_column(spark, config.engine, config.batch_size)
    began = time.perf_counter()
    with (
        job_description(spark, f"mobilenet_features: featurize {images} images ({config.engine})"),
        progress_lines(lambda: counters.images.value, images, context.log.info, PROGRESS_EVERY_SECONDS),
    ):
        yield Output(
            to_featurize.select("path", "label", "split", features("content", "path").alias("features")),
            metadata={"engine": config.engine, "batch_size": config.batch_size, "spark_tasks": tasks},
        )
    seconds = time.perf_counter() - began
    timings = counters.values()
    yield AssetObservation(
        asset_key=context.asset_key,
        metadata={
            **timings,
            "featurize_seconds": seconds,
            "images_per_second": timings["images"] / seconds if seconds else 0.0,
        },
    )


@asset_check(
    asset=mobilenet_features,
    additional_ins={"labeled_images": AssetIn("labeled_images")},
    blocking=True,
    description="Exactly one feature row per labeled image.",
)
def features_reconcile(mobilenet_features: DataFrame, labeled_images: DataFrame) -> AssetCheckResult:
    featurized = mobilenet_features.select("path", F.lit(True).alias("featurized"))
    labeled = labeled_images.select("path", F.lit(True).alias("labeled"))
    unmatched = (
        featurized.join(labeled, "path", "full_outer")
        .agg(
            F.count_if(F.col("featurized").isNull()).alias("missing"),
            F.count_if(F.col("labeled").isNull()).alias("unexpected"),
        )
        .first()
    )
    counts = {
        "feature_rows": mobilenet_features.count(),
        "labeled_images": labeled_images.count(),
        **unmatched.asDict(),
    }
    return AssetCheckResult(
        passed=counts["feature_rows"] == counts["labeled_images"] and counts["missing"] == counts["unexpected"] == 0,
        metadata=counts,
    )


@asset_check(asset=mobilenet_features, blocking=True, description="Every row holds 1280 finite values.")
def features_are_finite(mobilenet_features: DataFrame) -> AssetCheckResult:
    finite = F.forall("features", lambda x: ~F.isnan(x) & (F.abs(x) < float("inf")))
    bad = mobilenet_features.filter((F.size("features") != FEATURE_DIM) | ~finite).count()
    return AssetCheckResult(passed=bad == 0, metadata={"bad_rows": bad, "dimension": FEATURE_DIM})
