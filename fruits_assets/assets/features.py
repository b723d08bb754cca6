"""What becomes of each file: read once, decoded once, then labeled and featurized, or rejected with a reason."""

import time
from collections.abc import Iterator
from dataclasses import dataclass

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetOut,
    DataVersion,
    Failure,
    MetadataValue,
    Output,
    ResourceParam,
    StepLauncher,
    TableColumn,
    TableRecord,
    TableSchema,
    multi_asset,
)
from py4j.protocol import Py4JJavaError
from pyspark import StorageLevel
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fruits_assets.assets.config import POOL, TRANSIENT_FAILURES, IngestConfig, RunGuard, retried_only_if_transient
from fruits_assets.assets.screening import STATE_FILE, CheckVerdict, ScreeningState
from fruits_assets.resources.emr import register_step_work
from fruits_assets.resources.io_managers import DELTA_IO_MANAGER, JSON_IO_MANAGER
from fruits_assets.resources.locations import DataLocations
from fruits_assets.resources.spark_resource import SparkResource
from fruits_assets.resources.tables import DeltaTables, data_version
from fruits_assets.spark.delta import NOTHING_WRITTEN, Changes, Commit
from fruits_assets.spark.ingest import destroyed, ingest_column
from fruits_assets.spark.ingest_plan import (
    HELD,
    LISTING_ERROR,
    RETRIED_REASON,
    arrow_batch_size,
    plan_changes,
    plan_ingest,
    task_count,
)
from fruits_assets.spark.progress import job_description, progress_lines, side_by_side
from fruits_assets.spark.reconcile import (
    Totals,
    balanced,
    conflicts_among,
    label_counts,
    labeled_of,
    partition_counts,
    touched_counts,
    touched_rows,
)
from fruits_assets.vision.delta_log import TableState
from fruits_assets.vision.digest import recipe_digest
from fruits_assets.vision.featurizer import featurizer_id
from fruits_assets.vision.mobilenet import FEATURE_DIM

PROGRESS_EVERY_SECONDS = 10.0
RAW, LABELED, REJECTED, FEATURES = "raw_images", "labeled_images", "rejected_images", "mobilenet_features"
OUTPUT_TABLES = (LABELED, REJECTED, FEATURES)
LABELED_COLUMNS = ["path", "label", "split", "content_hash", "stamp", "recipe"]
REJECTED_COLUMNS = ["path", "label", "split", "reason", "message", "content_hash", "stamp", "recipe"]
FEATURE_COLUMNS = ["path", "label", "split", "content_hash", "featurizer", "features"]
PARTITIONS = {"labeled_images_reconcile": (LABELED, REJECTED), "every_image_accounted_for": (FEATURES, REJECTED)}
BLOCKING = ("labeled_images_reconcile", "every_image_accounted_for", "features_are_finite")
CONFLICTS_SHOWN = 20


def _count_table(rows: list[dict], columns: list[str], count_column: str) -> MetadataValue:
    return MetadataValue.table(
        records=[TableRecord({**{c: r[c] or "" for c in columns}, count_column: r["count"]}) for r in rows],
        schema=TableSchema(columns=[TableColumn(c, "string") for c in columns] + [TableColumn(count_column, "int")]),
    )


@multi_asset(
    deps=[RAW],
    pool=POOL,
    retry_policy=TRANSIENT_FAILURES,
    outs={
        LABELED: AssetOut(
            io_manager_key=DELTA_IO_MANAGER,
            group_name="images",
            kinds={"spark", "delta"},
            description="`path, label, split, content_hash, …` of every image that decodes and has a label folder.",
        ),
        REJECTED: AssetOut(
            io_manager_key=DELTA_IO_MANAGER,
            group_name="images",
            kinds={"spark", "delta"},
            description="`path, label, split, reason, message, …` of every file that is not featurized, and why.",
        ),
        FEATURES: AssetOut(
            io_manager_key=DELTA_IO_MANAGER,
            group_name="features",
            kinds={"spark", "delta"},
            description="`path, label, split, content_hash, featurizer, features`: each labeled image's 1280-d "
            "MobileNetV2 features (torchvision's ImageNet weights, global-average-pooled penultimate layer).",
        ),
        "class_index": AssetOut(
            io_manager_key=JSON_IO_MANAGER,
            group_name="images",
            kinds={"json"},
            description="`{label: class id}`: the labels of labeled_images, sorted, numbered from 0, for classifiers.",
        ),
    },
    internal_asset_deps={
        LABELED: {AssetKey(RAW)},
        REJECTED: {AssetKey(RAW)},
        FEATURES: {AssetKey(RAW), AssetKey(LABELED)},
        "class_index": {AssetKey(LABELED)},
    },
    check_specs=[
        AssetCheckSpec("labeled_images_reconcile", asset=LABELED, blocking=True, additional_deps=[RAW]),
        AssetCheckSpec("every_image_accounted_for", asset=FEATURES, blocking=True, additional_deps=[RAW]),
        AssetCheckSpec("features_are_finite", asset=FEATURES, blocking=True),
        AssetCheckSpec("labels_agree", asset=LABELED, description="The same bytes never carry two labels."),
    ],
)
@retried_only_if_transient
def screen_and_featurize(
    context: AssetExecutionContext,
    config: IngestConfig,
    pyspark: SparkResource,
    tables: DeltaTables,
    locations: DataLocations,
    run_guard: RunGuard,
    pyspark_step_launcher: ResourceParam[StepLauncher],
) -> Iterator:
    """Each new or changed file read once, hashed, decoded once; what decodes goes to the model from that decode.

    A file whose rows agree with its listing (stamp, recipe, featurizer) is not read
    again. The rest is read in chunks of about `chunk_files`, each committed to the
    three tables once it has passed its audit (one outcome per file, 1280 finite
    features per image): a run killed in chunk k keeps chunks 1 to k-1. With the
    same listing, recipe and table versions as the last complete run, nothing runs
    and no Spark starts.
    """
    inputs = screening_inputs(tables, locations, config)
    if inputs.nothing_to_do:
        context.log.info(f"nothing to do: {RAW} version {inputs.raw.version} was screened with this recipe already")
        yield from _unchanged(inputs.raw, inputs.states, inputs.previous)
        return
    yield from _screen(
        context,
        config,
        pyspark,
        tables,
        locations,
        inputs.raw,
        inputs.states,
        inputs.made_from,
        inputs.previous,
        inputs.recipe,
    )


@dataclass(frozen=True)
class ScreeningInputs:
    """What the screening would be made from, read without a JVM, and what the last complete one left."""

    raw: TableState
    states: dict[str, TableState | None]
    made_from: dict
    recipe: str
    previous: ScreeningState | None

    @property
    def nothing_to_do(self) -> bool:
        identities = {name: s.identity for name, s in self.states.items() if s is not None}
        return (
            self.previous is not None
            and len(identities) == len(OUTPUT_TABLES)
            and self.previous.still_current(self.made_from, identities, BLOCKING)
        )


def screening_inputs(tables: DeltaTables, locations: DataLocations, config: IngestConfig) -> ScreeningInputs:
    featurizer = featurizer_id(config.engine)
    recipe = f"{featurizer}|max_pixels={config.max_pixels}"
    raw = tables.state(RAW)
    if raw is None:
        raise Failure(f"no table {tables.path(RAW)}: materialize raw_images first", allow_retries=False)
    stored = locations.read(locations.path_of(STATE_FILE))
    return ScreeningInputs(
        raw=raw,
        states={name: tables.state(name) for name in OUTPUT_TABLES},
        made_from={RAW: raw.identity, "recipe": recipe},
        recipe=recipe,
        previous=ScreeningState.from_bytes(stored) if stored is not None else None,
    )


def screening_has_work(resources, op_config: dict) -> bool:
    """For the step launcher, before it sends the step anywhere: whether the screening has anything to do."""
    return not screening_inputs(resources.tables, resources.locations, IngestConfig(**op_config)).nothing_to_do


register_step_work("screen_and_featurize", screening_has_work)


def _unchanged(raw: TableState, states: dict[str, TableState | None], previous: ScreeningState) -> Iterator:
    """The outputs as they are and the checks as last judged on these very versions: nothing read, no Spark."""
    metadata = {"files_read": 0, "images": 0, "files_unchanged": raw.rows, "files_removed": 0, "chunks": 0}
    for name in OUTPUT_TABLES:
        state = states[name]
        assert state is not None
        yield Output(
            Commit(state, False, dict(NOTHING_WRITTEN)),
            output_name=name,
            data_version=data_version(state),
            metadata=metadata,
        )
    yield _class_output(previous.counts())
    for name, verdict in previous.checks.items():
        yield _check(name, verdict, judged="when these versions were committed")


def _screen(context, config, pyspark, tables, locations, raw, states, made_from, previous, recipe) -> Iterator:
    spark = pyspark.spark_session
    featurizer = recipe.split("|", 1)[0]
    chain_intact = previous is not None and previous.tables == {n: s.identity for n, s in states.items() if s}
    with job_description(spark, "screen_and_featurize: what changed since the last run"):
        plan, planned_from = _plan(context, spark, tables, raw, states, made_from, previous, recipe, config.chunk_files)
    context.log.info(
        f"{plan.todo_count} files to read in {len(plan.chunks)} chunk(s), {plan.kept} unchanged, "
        f"{plan.removed} removed since the last run (planned from {planned_from})"
    )
    outcome, counters, payload = ingest_column(spark, config.engine, config.batch_size, config.max_pixels)
    commits: dict[str, list[Commit]] = {name: [] for name in OUTPUT_TABLES}
    per_reason: dict[str, int] = {}
    audited = {"new_rows_checked": 0, "bad_rows": 0}
    retry_pending = 0  # every file this run leaves unread was done, so the reads to retry are this run's
    began = time.perf_counter()
    nothing = plan.todo_count == 0 and plan.removed == 0
    with (
        arrow_batch_size(spark, config.arrow_batch_size),
        progress_lines(lambda: counters.files.value, plan.todo_count, context.log.info, PROGRESS_EVERY_SECONDS),
        destroyed(payload),  # the model's bytes: on a warm driver a run leaves nothing it broadcast behind
    ):
        for index, chunk in enumerate([] if nothing else plan.chunks):
            label = f"chunk {index + 1}/{len(plan.chunks)}"
            rows = plan.todo.filter(chunk.condition())
            tasks = task_count(spark.sparkContext.defaultParallelism, plan.todo_count // len(plan.chunks) + 1)
            done = (
                rows.repartitionByRange(tasks, "path")
                .select("path", "label", "split", "stamp", *HELD, outcome("path", "label", "listing_error").alias("o"))
                .select(
                    "path",
                    "label",
                    "split",
                    "stamp",
                    *HELD,
                    "o.*",
                    F.lit(recipe).alias("recipe"),
                    F.lit(featurizer).alias("featurizer"),
                )
                .persist(StorageLevel.DISK_ONLY)
            )
            with job_description(spark, f"screen_and_featurize: read, screen and featurize {label}"):
                summary = _audit(done)
            audited["new_rows_checked"] += summary["accepted"]
            audited["bad_rows"] += summary["bad_rows"]
            if summary["bad_rows"] or summary["ambiguous"]:
                done.unpersist()
                yield from _failed_audit(label, summary)
                return
            for reason, count in summary["reasons"].items():
                per_reason[reason] = per_reason.get(reason, 0) + count
            retry_pending += summary["retry_pending"]
            deletes = plan.gone if index == 0 and plan.removed else None
            accepted, refused = done.filter(F.col("reason").isNull()), done.filter(F.col("reason").isNotNull())
            outcomes = {
                FEATURES: (accepted.select(*FEATURE_COLUMNS), "_in_features"),
                LABELED: (accepted.select(*LABELED_COLUMNS), "_in_labeled"),
                REJECTED: (refused.select(*REJECTED_COLUMNS), "_in_rejected"),
            }
            with job_description(spark, f"screen_and_featurize: commit {label}"):
                for name, (upserts, held) in outcomes.items():  # features first: a file is done once labeled too
                    commits[name].append(_commit(tables, name, upserts, done, deletes, summary["held"][held]))
            done.unpersist()
            _log_chunk(context, label, index, len(plan.chunks), summary, counters, plan.todo_count, began)
    timings = {**counters.values(), "compute_seconds": time.perf_counter() - began}
    final = {name: tables.state(name) for name in OUTPUT_TABLES}
    now = {name: tables.read(name) for name in OUTPUT_TABLES}
    rows = touched_rows(plan.touched, tables.read(RAW, raw.version), now[LABELED], now[REJECTED], now[FEATURES])
    try:  # on a warm driver, what a failed step cached would outlive it
        with job_description(spark, "screen_and_featurize: account for every file"):
            rows = rows.persist(StorageLevel.DISK_ONLY)
            totals = Totals(raw.rows, final[LABELED].rows, final[REJECTED].rows, final[FEATURES].rows)
            counts = partition_counts(totals, touched_counts(rows), plan.duplicated)  # `rows` computed, then reused
            last = previous if chain_intact else None
            classes, conflicts = side_by_side(  # small jobs, each leaving the cores idle between its stages
                spark,
                [
                    lambda: _label_counts(now[LABELED], labeled_of(rows), plan, last),
                    lambda: _conflicts(now[LABELED], labeled_of(rows), plan, last),
                ],
            )
    finally:
        rows.unpersist()
        plan.release()
    verdicts = {
        check: CheckVerdict(balanced(counts[check], names), counts[check]) for check, names in PARTITIONS.items()
    }
    verdicts["features_are_finite"] = CheckVerdict(
        audited["bad_rows"] == 0,
        {**audited, "table_rows": final[FEATURES].rows, "every_row_audited": "before its commit"},
    )
    verdicts["labels_agree"] = CheckVerdict(
        not conflicts, {"images_with_conflicting_labels": len(conflicts), "conflicts": conflicts[:CONFLICTS_SHOWN]}
    )
    run_metadata = {
        "files_read": plan.todo_count,
        "files_unchanged": plan.kept,
        "files_removed": plan.removed,
        "chunks": 0 if nothing else len(plan.chunks),
        "planned_from": planned_from,
        "read_retries_pending": retry_pending,
    }
    reasons = [{"reason": r, "count": n} for r, n in sorted(per_reason.items())]
    extra = {
        LABELED: {},
        REJECTED: {"new_images_per_reason": _count_table(reasons, ["reason"], "images")},
        FEATURES: {
            **timings,
            "images_per_second": timings["images"] / timings["stage_seconds"] if timings["stage_seconds"] else 0.0,
            "engine": config.engine,
            "featurizer": featurizer,
            "batch_size": config.batch_size,
            "chunk_files": config.chunk_files,
        },
    }
    for name in OUTPUT_TABLES:
        yield Output(
            _combined(commits[name], final[name]),
            output_name=name,
            data_version=data_version(final[name]),
            metadata={**run_metadata, **extra[name]},
        )
    if reasons:
        summary_text = ", ".join(f"{r['reason']}: {r['count']}" for r in reasons)
        context.log.warning(f"rejected {sum(r['count'] for r in reasons)} new files ({summary_text})")
    yield _class_output(classes)
    state = ScreeningState(
        made_from=made_from,
        tables={name: s.identity for name, s in final.items()},
        retry_pending=retry_pending,
        label_counts=[(split, label, n) for (split, label), n in sorted(classes.items(), key=_sort_key)],
        conflicts=conflicts,
        checks=verdicts,
    )
    tables.guard.check()
    locations.write(locations.path_of(STATE_FILE), state.to_bytes())
    for name, verdict in verdicts.items():
        yield _check(name, verdict)


def _plan(context, spark, tables, raw, states, made_from, previous, recipe: str, chunk_files: int) -> tuple:
    """From the listing's changes when the last complete screening allows it (`_listing_since`), else from the
    listing and the three tables compared whole; the plan and what it was made from."""
    since = _listing_since(previous, made_from, states)
    if since is not None:
        try:
            plan = plan_changes(
                spark,
                tables.changes(RAW, since, raw.version),
                lambda: tables.read(LABELED, states[LABELED].version),
                raw.rows,
                chunk_files,
            )
            return plan, f"the changes to {RAW} since version {since}, the last complete screening's"
        except (PySparkException, Py4JJavaError) as error:  # a change feed vacuumed or expired: compare whole
            context.log.warning(f"the changes to {RAW} since version {since} cannot be read ({error}): comparing whole")
    pinned = {name: tables.read(name, s.version) if s is not None else None for name, s in states.items()}
    featurizer = recipe.split("|", 1)[0]
    plan = plan_ingest(
        spark,
        tables.read(RAW, raw.version),
        pinned[LABELED],
        pinned[REJECTED],
        pinned[FEATURES],
        raw.rows,
        recipe,
        featurizer,
        chunk_files,
    )
    return plan, "the listing and the three tables, compared whole"


def _listing_since(previous: ScreeningState | None, made_from: dict, states: dict) -> int | None:
    """The listing's version the last complete screening was made from, when it left every file done: the same
    recipe and listing table, the three tables as it committed them, no read to retry, the blocking checks
    passed. Only what the listing changed since then is left to plan."""
    if previous is None or previous.made_from.get("recipe") != made_from["recipe"]:
        return None
    then, now = previous.made_from.get(RAW) or {}, made_from[RAW]
    identities = {name: s.identity for name, s in states.items() if s is not None}
    if then.get("table_id") != now["table_id"] or not 0 <= then.get("version", -1) < now["version"]:
        return None
    return then["version"] if previous.leaves_every_file_done(identities, BLOCKING) else None


def _sort_key(item) -> tuple[str, str]:
    (split, label), _ = item
    return (split or "", label)


def _commit(tables, name: str, upserts: DataFrame, done: DataFrame, deletes, held: int) -> Commit:
    """A chunk's rows for one table: appended when the table holds none of the chunk's paths and nothing is to be
    deleted there (new photos, a first run), else merged by path (the chunk's paths deleted unless upserted)."""
    if held == 0 and deletes is None:
        return tables.append(name, upserts)
    removed = done.select("path") if deletes is None else done.select("path").unionByName(deletes)
    return tables.merge(name, Changes(upserts, removed))


def _audit(done: DataFrame) -> dict:
    """One job over a chunk's outcomes (it computes them): per reason, and rows that must never be committed."""
    bad_features = F.col("features").isNotNull() & (
        (F.size("features") != FEATURE_DIM) | F.exists("features", lambda x: F.isnan(x) | (F.abs(x) == float("inf")))
    )
    ambiguous = F.col("reason").isNull() == F.col("features").isNull()  # both an outcome and features, or neither
    held = [F.count_if(F.col(flag)).alias(flag) for flag in HELD]
    retried = (F.col("reason") == RETRIED_REASON) & ~F.col("stamp").startswith(LISTING_ERROR)
    rows = (
        done.groupBy("reason")
        .agg(
            F.count("*").alias("count"),
            F.count_if(bad_features).alias("bad"),
            F.count_if(ambiguous).alias("ambiguous"),
            F.count_if(retried).alias("retried"),
            *held,
        )
        .collect()
    )
    return {
        "retry_pending": sum(int(r["retried"]) for r in rows),
        "held": {flag: sum(int(r[flag]) for r in rows) for flag in HELD},
        "reasons": {r["reason"]: int(r["count"]) for r in rows if r["reason"] is not None},
        "accepted": sum(int(r["count"]) for r in rows if r["reason"] is None),
        "files": sum(int(r["count"]) for r in rows),
        "bad_rows": sum(int(r["bad"]) for r in rows),
        "ambiguous": sum(int(r["ambiguous"]) for r in rows),
    }


def _failed_audit(label: str, summary: dict) -> Iterator:
    """A chunk that fails its audit is not committed: its verdict is reported and the run fails."""
    yield AssetCheckResult(
        asset_key=AssetKey(FEATURES),
        check_name="features_are_finite",
        passed=False,
        metadata={"chunk": label, "bad_rows": summary["bad_rows"], "rows_without_one_outcome": summary["ambiguous"]},
    )
    raise Failure(
        description=f"{label} failed its audit before its commit: {summary['bad_rows']} feature rows not 1280 finite "
        f"values, {summary['ambiguous']} rows with no single outcome. Nothing of it was committed; the tables keep "
        "their previous versions, and the next run reads these files again.",
        allow_retries=False,
    )


def _log_chunk(context, label: str, index: int, chunks: int, summary: dict, counters, total: int, began: float) -> None:
    done_files, seconds = counters.files.value, time.perf_counter() - began
    left = (total - done_files) * seconds / max(done_files, 1)
    context.log.info(
        f"{label} committed: {summary['files']} files ({summary['accepted']} featurized); {done_files}/{total} files "
        f"in {seconds:.0f} s" + (f", about {left / 60:.1f} min left" if index + 1 < chunks else "")
    )


def _combined(commits: list[Commit], final: TableState) -> Commit:
    totals = dict(NOTHING_WRITTEN)
    for commit in commits:
        for key, value in commit.metrics.items():
            totals[key] += value
    return Commit(final, any(c.committed for c in commits), totals)


def _label_counts(
    labeled: DataFrame, touched: DataFrame, plan, previous: ScreeningState | None
) -> dict[tuple[str | None, str], int]:
    """Images per (split, label): the last run's counts updated by what this run removed and added (`touched`:
    the labeled rows of the paths it touched)."""
    if previous is None:
        return label_counts(labeled)
    counts = previous.counts()
    for key, n in label_counts(plan.before).items():
        counts[key] = counts.get(key, 0) - n
    for key, n in label_counts(touched).items():
        counts[key] = counts.get(key, 0) + n
    return {key: n for key, n in counts.items() if n}


def _conflicts(labeled: DataFrame, touched: DataFrame, plan, previous: ScreeningState | None) -> list[dict]:
    """Hashes under two labels: the last run's, except those this run touched, which are judged again."""
    if previous is None:
        return conflicts_among(labeled, None)
    affected = plan.before.select("content_hash").unionByName(touched.select("content_hash"))
    known = [c["content_hash"] for c in previous.conflicts]
    touched_known = (
        {r["content_hash"] for r in affected.filter(F.col("content_hash").isin(known)).distinct().collect()}
        if known
        else set()
    )
    kept = [c for c in previous.conflicts if c["content_hash"] not in touched_known]
    return sorted(kept + conflicts_among(labeled, affected), key=lambda c: c["content_hash"])


def _class_output(counts: dict[tuple[str | None, str], int]) -> Output:
    """`{label: class id}` from the images per (split, label); its data version names its content."""
    labels = sorted({label for _, label in counts})
    index = {label: i for i, label in enumerate(labels)}
    rows = [{"split": split, "label": label, "count": n} for (split, label), n in sorted(counts.items(), key=_sort_key)]
    return Output(
        index,
        output_name="class_index",
        data_version=DataVersion(recipe_digest(index)),
        metadata={"classes": len(labels), "images_per_label": _count_table(rows, ["split", "label"], "images")},
    )


def _check(name: str, verdict: CheckVerdict, judged: str | None = None) -> AssetCheckResult:
    asset = {"labeled_images_reconcile": LABELED, "labels_agree": LABELED}.get(name, FEATURES)
    metadata = {k: MetadataValue.json(v) if isinstance(v, list | dict) else v for k, v in verdict.metadata.items()}
    return AssetCheckResult(
        asset_key=AssetKey(asset),
        check_name=name,
        passed=verdict.passed,
        severity=AssetCheckSeverity.WARN if name == "labels_agree" else AssetCheckSeverity.ERROR,
        metadata=metadata | ({"judged": judged} if judged else {}),
    )
