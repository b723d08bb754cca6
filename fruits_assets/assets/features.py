"""What becomes of each file: read once, decoded once, then labeled and featurized, or rejected with a reason."""

import time
from collections.abc import Iterator

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
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
    multi_asset,
)
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fruits_assets.assets.config import IngestConfig, RunGuard
from fruits_assets.resources.io_managers import DELTA_IO_MANAGER, JSON_IO_MANAGER
from fruits_assets.resources.spark_resource import SparkResource
from fruits_assets.resources.tables import DeltaTables
from fruits_assets.spark.delta import Changes
from fruits_assets.spark.ingest import ingest_column
from fruits_assets.spark.ingest_plan import arrow_batch_size, plan_ingest
from fruits_assets.spark.progress import job_description, progress_lines
from fruits_assets.spark.reconcile import balanced, label_conflicts, reconcile
from fruits_assets.vision.featurizer import featurizer_id
from fruits_assets.vision.mobilenet import FEATURE_DIM

PROGRESS_EVERY_SECONDS = 10.0
LABELED, REJECTED, FEATURES = "labeled_images", "rejected_images", "mobilenet_features"
LABELED_COLUMNS = ["path", "label", "split", "content_hash", "stamp", "recipe"]
REJECTED_COLUMNS = ["path", "label", "split", "reason", "message", "content_hash", "stamp", "recipe"]
FEATURE_COLUMNS = ["path", "label", "split", "content_hash", "featurizer", "features"]
CONFLICTS_SHOWN = 20


def _count_table(rows: list, columns: list[str], count_column: str) -> MetadataValue:
    return MetadataValue.table(
        records=[TableRecord({**{c: r[c] or "" for c in columns}, count_column: r["count"]}) for r in rows],
        schema=TableSchema(columns=[TableColumn(c, "string") for c in columns] + [TableColumn(count_column, "int")]),
    )


@multi_asset(
    ins={"raw_images": AssetIn()},
    outs={
        FEATURES: AssetOut(
            io_manager_key=DELTA_IO_MANAGER,
            group_name="features",
            kinds={"spark", "delta"},
            description="`path, label, split, content_hash, featurizer, features`: each labeled image's 1280-d "
            "MobileNetV2 features (torchvision's ImageNet weights, global-average-pooled penultimate layer).",
        ),
        REJECTED: AssetOut(
            io_manager_key=DELTA_IO_MANAGER,
            group_name="images",
            kinds={"spark", "delta"},
            description="`path, label, split, reason, message, …` of every file that is not featurized, and why.",
        ),
        LABELED: AssetOut(
            io_manager_key=DELTA_IO_MANAGER,
            group_name="images",
            kinds={"spark", "delta"},
            description="`path, label, split, content_hash, …` of every image that decodes and has a label folder.",
        ),
        "class_index": AssetOut(
            io_manager_key=JSON_IO_MANAGER,
            group_name="images",
            kinds={"json"},
            description="`{label: class id}`: the labels of labeled_images, sorted, numbered from 0, for classifiers.",
        ),
    },
    internal_asset_deps={
        LABELED: {AssetKey("raw_images")},
        REJECTED: {AssetKey("raw_images")},
        FEATURES: {AssetKey("raw_images"), AssetKey(LABELED)},
        "class_index": {AssetKey(LABELED)},
    },
    check_specs=[
        AssetCheckSpec("labeled_images_reconcile", asset=LABELED, blocking=True, additional_deps=["raw_images"]),
        AssetCheckSpec("every_image_accounted_for", asset=FEATURES, blocking=True, additional_deps=["raw_images"]),
        AssetCheckSpec("features_are_finite", asset=FEATURES, blocking=True),
        AssetCheckSpec("labels_agree", asset=LABELED, description="The same bytes never carry two labels."),
    ],
)
def screen_and_featurize(
    context: AssetExecutionContext,
    config: IngestConfig,
    pyspark: SparkResource,
    tables: DeltaTables,
    run_guard: RunGuard,
    raw_images: DataFrame,
    pyspark_step_launcher: ResourceParam[StepLauncher],
) -> Iterator:
    """Each new or changed file read once, hashed, decoded once; what decodes goes to the model from that decode.

    A file whose stamp and recipe (featurizer and pixel limit) match what was done
    before is not read again: its row, its screening and its features stay. The
    three tables receive only the changes, in one commit each; the checks are
    computed from what the step has.
    """
    spark = pyspark.spark_session
    featurizer = featurizer_id(config.engine)
    recipe = f"{featurizer}|max_pixels={config.max_pixels}"
    with job_description(spark, "screen_and_featurize: what changed since the last run"):
        plan = plan_ingest(
            spark, raw_images, tables.read(LABELED), tables.read(REJECTED), tables.read(FEATURES), recipe
        )
    context.log.info(f"{plan.todo_count} files to read, {plan.kept} unchanged, {plan.removed} removed since last run")
    outcome, counters = ingest_column(spark, config.engine, config.batch_size, config.max_pixels)
    done = (
        plan.todo.select("path", "label", "split", "stamp", outcome("path", "label", "listing_error").alias("o"))
        .select(
            "path",
            "label",
            "split",
            "stamp",
            "o.*",
            F.lit(recipe).alias("recipe"),
            F.lit(featurizer).alias("featurizer"),
        )
        .persist(StorageLevel.DISK_ONLY)
    )
    began = time.perf_counter()
    with (
        arrow_batch_size(spark, config.arrow_batch_size),
        job_description(spark, f"screen_and_featurize: read, screen and featurize {plan.todo_count} files"),
        progress_lines(lambda: counters.files.value, plan.todo_count, context.log.info, PROGRESS_EVERY_SECONDS),
    ):
        summary = (
            done.groupBy("reason")
            .agg(
                F.count("*").alias("count"),
                F.count_if(F.col("features").isNotNull() & (F.size("features") != FEATURE_DIM)).alias("wrong_size"),
                F.count_if(F.exists("features", lambda x: F.isnan(x) | (F.abs(x) == float("inf")))).alias("not_finite"),
            )
            .collect()
        )
    timings = {**counters.values(), "compute_seconds": time.perf_counter() - began}
    accepted = done.filter(F.col("reason").isNull())
    refused = done.filter(F.col("reason").isNotNull())
    touched = done.select("path").unionByName(plan.gone)
    nothing = plan.todo_count == 0 and plan.removed == 0
    per_reason = sorted((r for r in summary if r["reason"] is not None), key=lambda r: r["reason"])
    counts = {"files_read": plan.todo_count, "files_unchanged": plan.kept, "files_removed": plan.removed}
    yield Output(
        Changes(upserts=accepted.select(*LABELED_COLUMNS), deletes=touched, none=nothing),
        output_name=LABELED,
        metadata=counts,
    )
    yield Output(
        Changes(upserts=refused.select(*REJECTED_COLUMNS), deletes=touched, none=nothing),
        output_name=REJECTED,
        metadata={"new_images_per_reason": _count_table(per_reason, ["reason"], "images"), **counts},
    )
    yield Output(
        Changes(upserts=accepted.select(*FEATURE_COLUMNS), deletes=touched, none=nothing),
        output_name=FEATURES,
        metadata={
            **counts,
            **timings,
            "images_per_second": timings["images"] / timings["stage_seconds"] if timings["stage_seconds"] else 0.0,
            "engine": config.engine,
            "featurizer": featurizer,
            "batch_size": config.batch_size,
        },
    )
    done.unpersist()
    if per_reason:
        summary_text = ", ".join(f"{r['reason']}: {r['count']}" for r in per_reason)
        context.log.warning(f"rejected {sum(r['count'] for r in per_reason)} new files ({summary_text})")

    labeled = tables.read(LABELED)
    per_label = labeled.groupBy("split", "label").count().orderBy("split", "label").collect()
    labels = sorted({r["label"] for r in per_label})
    yield Output(
        {label: i for i, label in enumerate(labels)},
        output_name="class_index",
        metadata={
            "classes": len(labels),
            "images_per_label": _count_table(per_label, ["split", "label"], "images"),
        },
    )
    yield from _checks(tables, raw_images, summary)


def _checks(tables: DeltaTables, raw_images: DataFrame, summary: list) -> Iterator[AssetCheckResult]:
    """Every raw file labeled or rejected, every labeled one featurized, once; new features finite; labels agree."""
    labeled, rejected, features = tables.read(LABELED), tables.read(REJECTED), tables.read(FEATURES)
    partitions = {"labeled_images_reconcile": (LABELED, REJECTED), "every_image_accounted_for": (FEATURES, REJECTED)}
    counts = reconcile(raw_images, {LABELED: labeled, REJECTED: rejected, FEATURES: features}, partitions)
    for check, names in partitions.items():
        yield AssetCheckResult(
            asset_key=AssetKey(names[0]),
            check_name=check,
            passed=balanced(counts[check], names),
            metadata=counts[check],
        )
    wrong = sum(r["wrong_size"] + r["not_finite"] for r in summary)
    yield AssetCheckResult(
        asset_key=AssetKey(FEATURES),
        check_name="features_are_finite",
        passed=wrong == 0,
        metadata={"new_rows_checked": sum(r["count"] for r in summary if r["reason"] is None), "bad_rows": wrong},
    )
    conflicting, examples = label_conflicts(labeled, CONFLICTS_SHOWN)
    yield AssetCheckResult(
        asset_key=AssetKey(LABELED),
        check_name="labels_agree",
        passed=conflicting == 0,
        severity=AssetCheckSeverity.WARN,
        metadata={"images_with_conflicting_labels": conflicting, "conflicts": MetadataValue.json(examples)},
    )
