"""MobileNetV2 features of every labeled image, computed once per image and featurizer, stored as Parquet."""

import time
from collections.abc import Iterator

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetIn,
    AssetObservation,
    Output,
    ResourceParam,
    StepLauncher,
    asset,
    asset_check,
)
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fruits_assets.assets.config import FeaturizationConfig, RunConfigCheck
from fruits_assets.resources.io_managers import PARQUET_IO_MANAGER
from fruits_assets.resources.locations import DataLocations
from fruits_assets.resources.spark_resource import SparkResource
from fruits_assets.spark.feature_plan import FEATURE_COLUMNS, arrow_batch_size, plan_featurization
from fruits_assets.spark.featurize import features_column
from fruits_assets.spark.progress import job_description, progress_lines
from fruits_assets.spark.reconcile import account_for
from fruits_assets.vision.featurizer import featurizer_id
from fruits_assets.vision.mobilenet import FEATURE_DIM

PROGRESS_EVERY_SECONDS = 10.0


@asset(io_manager_key=PARQUET_IO_MANAGER, group_name="features", kinds={"spark", "tensorflow", "parquet"})
def mobilenet_features(
    context: AssetExecutionContext,
    config: FeaturizationConfig,
    pyspark: SparkResource,
    locations: DataLocations,
    run_config_check: RunConfigCheck,
    raw_images: DataFrame,
    labeled_images: DataFrame,
    pyspark_step_launcher: ResourceParam[StepLauncher],
) -> Iterator[Output[DataFrame] | AssetObservation]:
    """`path, label, split, content_hash, featurizer, features`: each labeled image's 1280-d MobileNetV2 features.

    Incremental: only images whose bytes this featurizer has not featurized
    before reach the model (see `plan_featurization`). Features are computed by
    the IO manager's single write; once written, the workers' timers are recorded
    as an observation: the featurization stage's span (first task start, engine
    build included, to the last features), images per second over it, decode and
    model seconds, and the whole write's seconds.
    """
    spark = pyspark.spark_session
    featurizer = featurizer_id(config.engine)
    with job_description(spark, "mobilenet_features: match stored features by content hash"):
        plan = plan_featurization(
            spark, raw_images, labeled_images, locations.path_of(context.asset_key.to_user_string()), featurizer
        )
    features, counters = features_column(spark, config.engine, config.batch_size)
    computed = plan.to_featurize.select(*FEATURE_COLUMNS[:4], features("content", "path").alias("features"))
    context.log.info(
        f"{plan.new} images to featurize, {plan.reused_count} reused, {plan.removed} removed since last run"
    )
    began = time.perf_counter()
    with (
        arrow_batch_size(spark, config.arrow_batch_size),
        job_description(spark, f"mobilenet_features: featurize {plan.new} images ({config.engine})"),
        progress_lines(lambda: counters.images.value, plan.new, context.log.info, PROGRESS_EVERY_SECONDS),
    ):
        yield Output(
            computed.withColumn("featurizer", F.lit(featurizer)).unionByName(plan.reused).select(*FEATURE_COLUMNS),
            metadata={
                **plan.counts(),
                "engine": config.engine,
                "featurizer": featurizer,
                "batch_size": config.batch_size,
                "spark_tasks": plan.tasks,
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
