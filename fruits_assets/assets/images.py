"""Images found under the images root: their bytes, their labels, and those that cannot be used."""

from collections.abc import Iterator

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetOut,
    MetadataValue,
    Output,
    ResourceParam,
    StepLauncher,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
    asset_check,
    multi_asset,
)
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fruits_assets.assets.config import RunConfigCheck, ScreeningConfig
from fruits_assets.resources.io_managers import JSON_IO_MANAGER, PARQUET_IO_MANAGER
from fruits_assets.resources.locations import DataLocations
from fruits_assets.resources.spark_resource import SparkResource
from fruits_assets.spark.listing import list_image_files, root_exists
from fruits_assets.spark.reading import is_image_path, read_image_files
from fruits_assets.spark.reconcile import account_for
from fruits_assets.spark.screening import with_screening
from fruits_assets.vision.paths import IMAGE_EXTENSIONS


@asset(io_manager_key=PARQUET_IO_MANAGER, group_name="images", kinds={"spark", "parquet"})
def raw_images(
    pyspark: SparkResource,
    locations: DataLocations,
    run_config_check: RunConfigCheck,
    pyspark_step_launcher: ResourceParam[StepLauncher],
) -> DataFrame:
    """Every .jpg, .jpeg and .png file (any case) below the images root, with its bytes and their SHA-256.

    Keeping the bytes in one Parquet dataset turns many small files into a few
    large ones, which later stages (and object stores) read far faster. The root
    is listed before Spark starts: a missing or empty root fails without starting it.
    """
    root = locations.images_root
    if not root_exists(root):
        raise FileNotFoundError(f"images root {root} does not exist (set FRUITS_IMAGES)")
    listed = list_image_files(root)
    if not listed:
        raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    return read_image_files(pyspark.spark_session, root, listed)


def _count_table(rows: list, columns: list[str], count_column: str) -> MetadataValue:
    return MetadataValue.table(
        records=[TableRecord({**{c: r[c] or "" for c in columns}, count_column: r["count"]}) for r in rows],
        schema=TableSchema(columns=[TableColumn(c, "string") for c in columns] + [TableColumn(count_column, "int")]),
    )


@multi_asset(
    outs={
        "labeled_images": AssetOut(
            io_manager_key=PARQUET_IO_MANAGER,
            group_name="images",
            kinds={"spark", "parquet"},
            description="`path, label, split, content_hash` of every image that decodes and has a label folder.",
        ),
        "rejected_images": AssetOut(
            io_manager_key=PARQUET_IO_MANAGER,
            group_name="images",
            kinds={"spark", "parquet"},
            description="`path, label, split, reason, message` of every image that cannot be featurized, and why.",
        ),
        "class_index": AssetOut(
            io_manager_key=JSON_IO_MANAGER,
            group_name="images",
            kinds={"json"},
            description="`{label: class id}`: the labels of labeled_images, sorted, numbered from 0, for classifiers.",
        ),
    },
)
def screen_images(
    context: AssetExecutionContext,
    config: ScreeningConfig,
    raw_images: DataFrame,
    locations: DataLocations,
    run_config_check: RunConfigCheck,
    pyspark_step_launcher: ResourceParam[StepLauncher],
) -> Iterator[Output]:
    """Label each image from its folders, decode it, and split the images into labeled and rejected.

    Every raw image lands in exactly one of the two: nothing is dropped without a trace.
    The class index comes from the same per-label counts, at no extra pass over the images.
    """
    screened = with_screening(raw_images, locations.images_root, config.max_pixels)
    screened = screened.drop("content", "modificationTime", "length").persist()
    accepted = screened.filter(F.col("reason").isNull()).drop("reason", "message")
    rejected = screened.filter(F.col("reason").isNotNull()).select("path", "label", "split", "reason", "message")
    per_label = accepted.groupBy("split", "label").count().orderBy("split", "label").collect()
    per_reason = rejected.groupBy("reason").count().orderBy("reason").collect()
    if per_reason:
        summary = ", ".join(f"{r['reason']}: {r['count']}" for r in per_reason)
        examples = "; ".join(f"{r.path} ({r.reason}: {r.message})" for r in rejected.limit(5).collect())
        context.log.warning(f"rejected {sum(r['count'] for r in per_reason)} images ({summary}), e.g. {examples}")
    labels = sorted({r["label"] for r in per_label})
    yield Output(
        accepted,
        output_name="labeled_images",
        metadata={"labels": len(labels), "images_per_label": _count_table(per_label, ["split", "label"], "images")},
    )
    yield Output(
        {label: i for i, label in enumerate(labels)},
        output_name="class_index",
        metadata={"classes": len(labels), "first": labels[0] if labels else "", "last": labels[-1] if labels else ""},
    )
    yield Output(
        rejected,
        output_name="rejected_images",
        metadata={"images_per_reason": _count_table(per_reason, ["reason"], "images")},
    )
    screened.unpersist()


@asset_check(asset=raw_images, description="At least one image, and only image files.")
def raw_images_are_images(
    raw_images: DataFrame, pyspark_step_launcher: ResourceParam[StepLauncher]
) -> AssetCheckResult:
    counts = raw_images.agg(F.count("*").alias("images"), F.count_if(~is_image_path("path")).alias("strays")).first()
    images, strays = counts["images"], counts["strays"]
    return AssetCheckResult(passed=images > 0 and strays == 0, metadata={"images": images, "non_image_files": strays})


@asset_check(
    asset=AssetKey("labeled_images"),
    additional_ins={"raw_images": AssetIn("raw_images"), "rejected_images": AssetIn("rejected_images")},
    blocking=True,
    description="Every raw image is either labeled or rejected, exactly once; every labeled one has a label.",
)
def labeled_images_reconcile(
    labeled_images: DataFrame,
    raw_images: DataFrame,
    rejected_images: DataFrame,
    pyspark_step_launcher: ResourceParam[StepLauncher],
) -> AssetCheckResult:
    passed, counts = account_for(raw_images, {"labeled_images": labeled_images, "rejected_images": rejected_images})
    unlabeled = labeled_images.filter(F.col("label").isNull()).count()
    return AssetCheckResult(passed=passed and unlabeled == 0, metadata={**counts, "unlabeled": unlabeled})
