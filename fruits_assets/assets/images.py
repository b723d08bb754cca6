"""Images found under the images root, and their labels."""

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetIn,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
    asset_check,
)
from dagster_pyspark import LazyPySparkResource
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fruits_assets.resources.locations import DataLocations
from fruits_assets.spark.files import path_exists
from fruits_assets.spark.images import is_image_path, read_image_files, with_labels
from fruits_assets.vision.paths import IMAGE_EXTENSIONS

SPARK_PARQUET = "spark_parquet_io_manager"


@asset(io_manager_key=SPARK_PARQUET, group_name="images", kinds={"spark", "parquet"})
def raw_images(pyspark: LazyPySparkResource, locations: DataLocations) -> DataFrame:
    """Every .jpg, .jpeg and .png file (any case) below the images root, with its bytes.

    Keeping the bytes in one Parquet dataset turns many small files into a few
    large ones, which later stages (and object stores) read far faster.
    """
    spark, root = pyspark.spark_session, locations.images_root
    if not path_exists(spark, root):
        raise FileNotFoundError(f"images root {root} does not exist (set FRUITS_IMAGES)")
    images = read_image_files(spark, root)
    if images.isEmpty():
        raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    return images


@asset(io_manager_key=SPARK_PARQUET, group_name="images", kinds={"spark", "parquet"})
def labeled_images(context: AssetExecutionContext, raw_images: DataFrame, locations: DataLocations) -> DataFrame:
    """Each image's `label` (its folder's name) and `split` (the folder above, if any); no bytes."""
    labeled = with_labels(raw_images.drop("content"), locations.images_root)
    per_label = labeled.groupBy("split", "label").count().orderBy("split", "label").collect()
    context.add_output_metadata(
        {
            "labels": len({r["label"] for r in per_label}),
            "images_per_label": MetadataValue.table(
                records=[
                    TableRecord({"split": r["split"] or "", "label": r["label"] or "", "images": r["count"]})
                    for r in per_label
                ],
                schema=TableSchema(
                    columns=[
                        TableColumn("split", "string"),
                        TableColumn("label", "string"),
                        TableColumn("images", "int"),
                    ]
                ),
            ),
        }
    )
    return labeled


@asset_check(asset=raw_images, description="At least one image, and only image files.")
def raw_images_are_images(raw_images: DataFrame) -> AssetCheckResult:
    images = raw_images.count()
    strays = raw_images.filter(~is_image_path("path")).count()
    return AssetCheckResult(passed=images > 0 and strays == 0, metadata={"images": images, "non_image_files": strays})


@asset_check(
    asset=labeled_images,
    additional_ins={"raw_images": AssetIn("raw_images")},
    blocking=True,
    description="One labeled row per raw image, every one with a label.",
)
def labeled_images_reconcile(labeled_images: DataFrame, raw_images: DataFrame) -> AssetCheckResult:
    raw, labeled = raw_images.count(), labeled_images.count()
    unlabeled = labeled_images.filter(F.col("label").isNull()).count()
    return AssetCheckResult(
        passed=raw == labeled and unlabeled == 0,
        metadata={"raw_images": raw, "labeled_images": labeled, "unlabeled": unlabeled},
    )
