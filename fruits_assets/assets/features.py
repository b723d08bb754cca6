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
    ResourceParam,
    asset,
    asset_check,
)
from dagster._core.definitions.step_launcher import StepLauncher
from dagster_pyspark import LazyPySparkResource
from pydantic import Field
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fruits_assets.assets.images import SPARK_PARQUET
from fruits_assets.resources.locations import DataLocations
from fruits_assets.resources.spark import DEFAULT_ARROW_BATCH
from fruits_assets.spark.featurize import FEATURE_COLUMNS, features_column, previous_features, split_by_known_hash
from fruits_assets.spark.progress import job_description, progress_lines
from fruits_assets.spark.reconcile import account_for
from fruits_assets.vision.engines import DEFAULT_ENGINE, ENGINES, featurizer_id
from fruits_assets.vision.mobilenet import FEATURE_DIM

PROGRESS_EVERY_SECONDS = 10.0
IMAGES_PER_TASK = 1024  # tasks in multiples of the cores: even load; few, as each task start costs ~0.2 s idle per core


class FeaturizationConfig(Config):
    engine: str = Field(default=DEFAULT_ENGINE, description=f"Feature engine: one of {', '.join(ENGINES)}.")
    batch_size: int = Field(default=4, ge=1, description="Images per model call (small batches stay in cache).")
    arrow_batch_size: int = Field(
        default=DEFAULT_ARROW_BATCH, ge=1, description="Rows per Arrow batch sent to the Python workers."
    )


def _task_count(spark: SparkSession, images: int) -> int:
    slots = spark.sparkContext.defaultParallelism
    return slots * max(1, math.ceil(images / (slots * IMAGES_PER_TASK)))


@asset(io_manager_key=SPARK_PARQUET, group_name="features", kinds={"spark", "tensorflow", "parquet"})
def mobilenet_features(
    context: AssetExecutionContext,
    config: FeaturizationConfig,
    pyspark: LazyPySparkResource,
    locations: DataLocations,
    raw_images: DataFrame,
    labeled_images: DataFrame,
    pyspark_step_launcher: ResourceParam[StepLauncher],
) -> Iterator[Output[DataFrame] | AssetObservation]:
    """`path, label, split, content_hash, featurizer, features`: each labeled image's 1280-d MobileNetV2 features.

    Incremental: an image whose bytes (SHA-256) the previous materialization
    already featurized with the same featurizer keeps those features, so only new
    or changed images reach the model; a renamed file is not recomputed. Features
    are computed by the IO manager's single write; once written, the workers'
    timers are recorded as an observation: the featurization stage's span (first
    task start, engine build included, to the last features), images per second
    over it, decode and model seconds, and the whole write's seconds.
    """
    spark = pyspark.spark_session
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(config.arrow_batch_size))
    featurizer = featurizer_id(config.engine)
    labeled = labeled_images.select("path", "label", "split", "content_hash")
    with job_description(spark, "mobilenet_features: match previous features by content hash"):
        previous = previous_features(spark, locations.path_of(context.asset_key.to_user_string()))
        reused, todo = split_by_known_hash(labeled, previous, featurizer)
        changes = {
            "new": todo.count(),
            "reused": reused.count(),
            "removed": previous.join(labeled, "path", "left_anti").count(),
        }
    tasks = _task_count(spark, changes["new"])
    to_featurize = raw_images.select("path", "content").join(F.broadcast(todo), "path").repartition(tasks)
    features, counters = features_column(spark, config.engine, config.batch_size)
    computed = to_featurize.select(*FEATURE_COLUMNS[:4], features("content", "path").alias("features"))
    context.log.info(
        f"{changes['new']} images to featurize, {changes['reused']} reused, {changes['removed']} removed since last run"
    )
    began = time.perf_counter()
    with (
        job_description(spark, f"mobilenet_features: featurize {changes['new']} images ({config.engine})"),
        progress_lines(lambda: counters.images.value, changes["new"], context.log.info, PROGRESS_EVERY_SECONDS),
    ):
        yield Output(
            computed.withColumn("featurizer", F.lit(featurizer)).unionByName(reused).select(*FEATURE_COLUMNS),
            metadata={
                **changes,
                "engine": config.engine,
                "featurizer": featurizer,
                "batch_size": config.batch_size,
                "spark_tasks": tasks,
            },
        )
    timings = counters.values()
    yield AssetObservation(
        asset_key=context.asset_key,
        metadata={
            **timings,
            "write_seconds": time.perf_counter() - began,
            "images_per_second": timings["images"] / timings["stage_seconds"] if timings["stage_seconds"] else 0.0,
        },
    )


@asset_check(
    asset=mobilenet_features,
    additional_ins={"raw_images": AssetIn("raw_images"), "rejected_images": AssetIn("rejected_images")},
    blocking=True,
    description="raw_images = mobilenet_features + rejected_images: every image featurized or rejected, once.",
)
def every_image_accounted_for(
    mobilenet_features: DataFrame,
    raw_images: DataFrame,
    rejected_images: DataFrame,
    pyspark_step_launcher: ResourceParam[StepLauncher],
) -> AssetCheckResult:
    passed, counts = account_for(
        raw_images, {"mobilenet_features": mobilenet_features, "rejected_images": rejected_images}
    )
    return AssetCheckResult(passed=passed, metadata=counts)


@asset_check(asset=mobilenet_features, blocking=True, description="Every row holds 1280 finite values.")
def features_are_finite(
    mobilenet_features: DataFrame, pyspark_step_launcher: ResourceParam[StepLauncher]
) -> AssetCheckResult:
    finite = F.forall("features", lambda x: ~F.isnan(x) & (F.abs(x) < float("inf")))
    bad = mobilenet_features.filter((F.size("features") != FEATURE_DIM) | ~finite).count()
    return AssetCheckResult(passed=bad == 0, metadata={"bad_rows": bad, "dimension": FEATURE_DIM})
