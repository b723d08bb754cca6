"""The files found under the images root: every one, listed with what identifies its version."""

from collections.abc import Iterator

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    Output,
    ResourceParam,
    StepLauncher,
    asset,
)

from fruits_assets.assets.config import RunGuard
from fruits_assets.resources.io_managers import DELTA_IO_MANAGER
from fruits_assets.resources.locations import DataLocations
from fruits_assets.resources.spark_resource import SparkResource
from fruits_assets.resources.tables import DeltaTables
from fruits_assets.spark.delta import Changes
from fruits_assets.spark.listing import RAW_SCHEMA, list_files, listing_changes, root_exists
from fruits_assets.spark.progress import job_description


@asset(
    io_manager_key=DELTA_IO_MANAGER,
    group_name="images",
    kinds={"spark", "delta"},
    check_specs=[AssetCheckSpec("raw_images_listed", asset="raw_images", blocking=True)],
)
def raw_images(
    context: AssetExecutionContext,
    pyspark: SparkResource,
    locations: DataLocations,
    tables: DeltaTables,
    run_guard: RunGuard,
    pyspark_step_launcher: ResourceParam[StepLauncher],
) -> Iterator:
    """`path, size, modified, etag, stamp, label, split, listing_error` of every file below the images root.

    Every file is a row, whatever its name: litter and unreadable entries included,
    so that each ends featurized or rejected with a reason. `stamp` (size and
    modification time, or size and ETag on S3) identifies a file's version: a file
    whose stamp is unchanged is never read again. Only what changed since the last
    run is merged into the table. The root is listed before Spark starts: a missing
    root fails without starting it.
    """
    root = locations.images_root
    if not root_exists(root):
        raise FileNotFoundError(f"images root {root} does not exist (set FRUITS_IMAGES)")
    listing = list_files(root)
    if listing.empty:
        raise ValueError(f"no files at all under {root}: nothing to featurize")
    spark = pyspark.spark_session
    with job_description(spark, "raw_images: compare the listing with the last one"):
        previous = tables.read(context.asset_key.to_user_string())
        known = previous.select("path", "stamp").toPandas() if previous is not None else listing[["path", "stamp"]][:0]
    new, gone = listing_changes(listing, known)
    changes = Changes(
        upserts=spark.createDataFrame(new, RAW_SCHEMA),
        deletes=spark.createDataFrame(gone[["path"]], "path string"),
        none=previous is not None and new.empty and gone.empty,
    )
    unreadable = int(listing["listing_error"].notna().sum())
    yield AssetCheckResult(
        check_name="raw_images_listed",
        passed=len(listing) > 0,
        metadata={"files": len(listing), "unexaminable_entries": unreadable, "root": root},
    )
    yield Output(
        changes,
        metadata={
            "files": len(listing),
            "new_or_changed": len(new),
            "gone": len(gone),
            "unexaminable_entries": unreadable,
        },
    )
