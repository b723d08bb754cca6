"""The files found under the images root: every one, listed with what identifies its version."""

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
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

from fruits_assets.assets.config import POOL, TRANSIENT_FAILURES, ListingConfig, RunGuard, retried_only_if_transient
from fruits_assets.resources.emr import register_step_work
from fruits_assets.resources.io_managers import DELTA_IO_MANAGER
from fruits_assets.resources.locations import DataLocations
from fruits_assets.resources.spark_resource import SparkResource
from fruits_assets.resources.tables import DeltaTables, data_version
from fruits_assets.spark.delta import NOTHING_WRITTEN, Changes, Commit
from fruits_assets.spark.listing import (
    RAW_SCHEMA,
    list_files,
    list_paths,
    listing_changes,
    path_prefix,
    root_exists,
    unique_paths,
)
from fruits_assets.spark.progress import job_description
from fruits_assets.vision.paths import absolute_location, is_within

RAW = "raw_images"


def _listed(locations: DataLocations, tables: DeltaTables, config: ListingConfig) -> tuple:
    """The listing (of the whole root, or of the paths given) and how it differs from the stored one: no JVM."""
    root = locations.images_root
    if not root_exists(root):
        raise Failure(f"images root {root} does not exist (set FRUITS_IMAGES)", allow_retries=False)
    outside = [p for p in (config.paths or []) if not is_within(absolute_location(p), root)]
    if outside:
        raise Failure(f"paths outside the images root {root}: {outside[:5]}", allow_retries=False)
    prefix = path_prefix(root)
    # Compared with the stored rows by their exact string: another spelling of a stored path would count as new.
    misspelt = [p for p in (config.paths or []) if not p.startswith(prefix)]
    if misspelt:
        raise Failure(
            f"ops.raw_images.config.paths must be spelt as raw_images holds them, {prefix}…: {misspelt[:5]}",
            allow_retries=False,
        )
    before = tables.state(RAW)
    partial = config.paths is not None and before is not None
    listing = list_paths(root, config.paths) if partial else list_files(root)
    if listing.num_rows == 0 and not partial:
        raise Failure(f"no files at all under {root}: nothing to featurize", allow_retries=False)
    known = tables.columns(RAW, ["path", "stamp"]) if before is not None else None
    if partial:  # of the stored rows, those of the paths examined: any not found again are gone
        known = known.filter(pc.is_in(known.column("path"), pa.array(sorted(set(config.paths)), pa.string())))
    new, gone, added = listing_changes(listing, known)
    return before, listing, new, gone, added, partial


def raw_images_has_work(resources, op_config: dict) -> bool:
    """For the step launcher: whether the listing differs from the stored one (a listing on the host, no JVM)."""
    before, _, new, gone, _, _ = _listed(resources.locations, resources.tables, ListingConfig(**op_config))
    return before is None or new.num_rows > 0 or gone.num_rows > 0


register_step_work(RAW, raw_images_has_work)


@asset(
    io_manager_key=DELTA_IO_MANAGER,
    group_name="images",
    kinds={"spark", "delta"},
    pool=POOL,
    retry_policy=TRANSIENT_FAILURES,
    check_specs=[
        AssetCheckSpec(
            "raw_images_listed",
            asset=RAW,
            blocking=True,
            description="The table about to be committed holds each listed file exactly once.",
        )
    ],
)
@retried_only_if_transient
def raw_images(
    context: AssetExecutionContext,
    config: ListingConfig,
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
    when something changed does Spark start, to commit what changed: an append when
    every changed path is new (no join with the table), else one merge.
    Given `paths` (a sensor's change set), only those are examined.
    """
    root = locations.images_root
    before, listing, new, gone, added, partial = _listed(locations, tables, config)
    expected = (before.rows if before is not None else 0) + added - gone.num_rows
    unique = unique_paths(listing)
    figures = {
        "files": listing.num_rows,
        "new_or_changed": new.num_rows,
        "gone": gone.num_rows,
        "unexaminable_entries": listing.num_rows - listing.column("listing_error").null_count,
        "root": root,
    }
    audit = {**figures, "paths_unique": unique, "rows_after_commit": expected, "paths_examined": listing.num_rows}
    # A full listing must leave the table one row per listed file; a partial one, one row per path it examined.
    passed = unique and (partial or expected == listing.num_rows)
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
        upserts = spark.createDataFrame(new, RAW_SCHEMA)  # from Arrow: no pandas copy of every changed row
        if gone.num_rows == 0 and added == new.num_rows:  # only paths the table lacks: no join with it
            with job_description(spark, "raw_images: append the new files"):
                commit = tables.append(RAW, upserts)
        else:
            with job_description(spark, "raw_images: merge what changed"):
                deletes = spark.createDataFrame(gone, "path string")
                commit = tables.merge(RAW, Changes(upserts, deletes))
    del listing, new, gone
    # One process runs every step: Arrow's allocator would otherwise keep the listing's memory for the whole run.
    pa.default_memory_pool().release_unused()
    yield Output(commit, data_version=data_version(commit.state), metadata=figures)
    yield AssetCheckResult(check_name="raw_images_listed", passed=True, metadata=audit)
