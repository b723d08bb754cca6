"""The files found under the images root: every one, listed with what identifies its version."""

from collections.abc import Iterator

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    Failure,
    Output,
    ResourceParam,
    StepLauncher,
    asset,
)

from fruits_assets.assets.config import RunGuard
from fruits_assets.resources.io_managers import DELTA_IO_MANAGER
from fruits_assets.resources.locations import DataLocations
from fruits_assets.resources.spark_resource import SparkResource
from fruits_assets.resources.tables import DeltaTables, data_version
from fruits_assets.spark.delta import NOTHING_WRITTEN, Changes, Commit
from fruits_assets.spark.listing import RAW_SCHEMA, list_files, listing_changes, root_exists, unique_paths
from fruits_assets.spark.progress import job_description

RAW = "raw_images"


@asset(
    io_manager_key=DELTA_IO_MANAGER,
    group_name="images",
    kinds={"spark", "delta"},
    check_specs=[
        AssetCheckSpec(
            "raw_images_listed",
            asset=RAW,
            blocking=True,
            description="The table about to be committed holds each listed file exactly once.",
        )
    ],
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
    so that each ends featurized or rejected with a reason. `stamp` identifies a
    file's version: a file whose stamp is unchanged is never read again. The listing
    is compared with the stored one without Spark (the table read by delta-rs); only
    when something changed does Spark start, to merge what changed in one commit.
    """
    root = locations.images_root
    if not root_exists(root):
        raise FileNotFoundError(f"images root {root} does not exist (set FRUITS_IMAGES)")
    listing = list_files(root)
    if listing.num_rows == 0:
        raise ValueError(f"no files at all under {root}: nothing to featurize")
    before = tables.state(RAW)
    known = tables.columns(RAW, ["path", "stamp"]) if before is not None else None
    new, gone, added = listing_changes(listing, known)
    expected = (before.rows if before is not None else 0) + added - gone.num_rows
    unique = unique_paths(listing)
    figures = {
        "files": listing.num_rows,
        "new_or_changed": new.num_rows,
        "gone": gone.num_rows,
        "unexaminable_entries": listing.num_rows - listing.column("listing_error").null_count,
        "root": root,
    }
    audit = {**figures, "paths_unique": unique, "rows_after_commit": expected}
    passed = unique and expected == listing.num_rows
    if not passed:  # judged before the commit it guards: the stored table keeps its version
        yield AssetCheckResult(check_name="raw_images_listed", passed=False, metadata=audit)
        raise Failure(
            description=f"the listing of {root} would leave {expected} rows for {listing.num_rows} files "
            f"(paths unique: {unique}): nothing was committed",
            allow_retries=False,
        )
    if before is not None and new.num_rows == 0 and gone.num_rows == 0:
        commit = Commit(before, False, dict(NOTHING_WRITTEN))  # nothing changed: no Spark at all
    else:
        spark = pyspark.spark_session
        with job_description(spark, "raw_images: merge what changed"):
            upserts = spark.createDataFrame(new.to_pandas(), RAW_SCHEMA)
            deletes = spark.createDataFrame(gone.to_pandas(), "path string")
            commit = tables.merge(RAW, Changes(upserts, deletes))
    yield Output(commit, data_version=data_version(commit.state), metadata=figures)
    yield AssetCheckResult(check_name="raw_images_listed", passed=True, metadata=audit)
