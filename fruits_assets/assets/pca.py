"""PCA reduction of the features: the fitted model, the reduced matrix, and that matrix as one CSV file."""

import json
from collections.abc import Iterator

import numpy as np
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
    asset,
    multi_asset,
)
from pyspark import StorageLevel
from pyspark.sql import functions as F

from fruits_assets.assets.automation import ON_NEW_DATA
from fruits_assets.assets.config import POOL, TRANSIENT_FAILURES, PCAConfig, RunGuard, retried_only_if_transient
from fruits_assets.assets.plots import explained_variance_png, markdown_image, pc_scatter_png
from fruits_assets.resources.csv_files import CsvFiles, CsvWrite
from fruits_assets.resources.emr import register_step_work
from fruits_assets.resources.io_managers import CSV_IO_MANAGER, DELTA_IO_MANAGER, MODEL_IO_MANAGER
from fruits_assets.resources.models import FittedModel, ModelStore, version_folder
from fruits_assets.resources.spark_resource import SparkResource
from fruits_assets.resources.tables import DeltaTables, data_version
from fruits_assets.spark.delta import NOTHING_WRITTEN, Commit
from fruits_assets.spark.files import Produced
from fruits_assets.spark.moments import Moments, change_moments, moments_of
from fruits_assets.spark.pca import ID_COLUMNS, Projection, fit_pca, pca_k, project
from fruits_assets.spark.progress import job_description
from fruits_assets.vision.delta_log import TableState

FEATURES, MODEL, PROJECTED, CSV = "mobilenet_features", "pca_model", "pca_features", "pca_features_csv"
MOMENTS, FIT, PROJECTION = "moments.npz", "fit.json", "projection.npz"
CSV_DECIMALS = 6  # beyond float32 features' precision, and far above run-to-run rounding noise
CSV_FORMAT = "arrow"  # numbers rounded half to even and written in their shortest form by Arrow
SCATTER_POINTS = 5000  # a sample is enough to see the clusters, whatever the number of images


@asset(
    io_manager_key=MODEL_IO_MANAGER,
    group_name="reduction",
    kinds={"spark"},
    deps=[FEATURES],
    automation_condition=ON_NEW_DATA,
    pool=POOL,
    retry_policy=TRANSIENT_FAILURES,
    check_specs=[AssetCheckSpec("explained_variance_reaches_target", asset=MODEL)],
)
@retried_only_if_transient
def pca_model(
    context: AssetExecutionContext,
    config: PCAConfig,
    pyspark: SparkResource,
    tables: DeltaTables,
    models: ModelStore,
    run_guard: RunGuard,
    pyspark_step_launcher: ResourceParam[StepLauncher],
) -> Iterator:
    """A Spark ML PipelineModel, StandardScaler (mean and std) then PCA, fitted on every feature row.

    Fitted from the features' moments (count, sums, cross-products), kept with the
    identity of the table version they summarize and updated with the rows later
    versions added and removed: refitting after a 1% change reads 1% of the features.
    With the same table version and config as the current model, nothing is fitted
    and no Spark starts.
    """
    features, made_from = _pca_made_from(tables, config)
    if models.made_from(MODEL) == made_from:
        fit, source = json.loads(models.file(MODEL, FIT) or b"{}"), "unchanged"
        model = None
        files: dict[str, bytes] = {}
    else:
        moments, source = _moments(context, pyspark, tables, models, features)
        if moments.count == 0:
            raise Failure(
                "no features to fit PCA on: every image was rejected (see the rejected_images asset)",
                allow_retries=False,
            )
        model, spectrum = fit_pca(moments, config.k, config.variance_target)
        fit = {"spectrum": spectrum, "k": pca_k(model), "rows": moments.count}
        files = {
            MOMENTS: moments.to_bytes(),
            FIT: json.dumps(fit).encode(),
            PROJECTION: Projection.of(model).to_bytes(),
        }
    spectrum, k = fit["spectrum"], fit["k"]
    explained = spectrum[:k]
    total = float(sum(explained))
    plot = explained_variance_png(spectrum, k, config.variance_target if config.k is None else None)
    yield Output(
        FittedModel(model, made_from, files),
        data_version=DataVersion(version_folder(made_from)),
        metadata={
            "explained_variance_plot": MetadataValue.md(markdown_image(plot, "explained variance")),
            "k": k,
            "variance_target": config.variance_target,
            "k_configured": config.k is not None,
            "explained_variance": [round(v, 6) for v in explained],
            "cumulative_explained_variance": [round(v, 6) for v in np.cumsum(explained)],
            "explained_variance_total": total,
            "components_in_data": len(spectrum),
            "rows": fit["rows"],
            "features_version": features.version,
            "moments": source,
        },
    )
    yield AssetCheckResult(
        check_name="explained_variance_reaches_target",
        passed=total >= config.variance_target,
        # A k chosen by hand may knowingly fall short of the target: warn, don't fail.
        severity=AssetCheckSeverity.WARN if config.k is not None else AssetCheckSeverity.ERROR,
        metadata={"explained_variance_total": total, "variance_target": config.variance_target, "k": k},
    )


def _pca_made_from(tables: DeltaTables, config: PCAConfig) -> tuple[TableState, dict]:
    features = _state(tables, FEATURES)
    return features, {FEATURES: features.identity, "k": config.k, "variance_target": config.variance_target}


def pca_has_work(resources, op_config: dict) -> bool:
    """For the step launcher: whether the current model was made from other features or settings (no JVM)."""
    return resources.models.made_from(MODEL) != _pca_made_from(resources.tables, PCAConfig(**op_config))[1]


def projection_has_work(resources, op_config: dict) -> bool:
    """For the step launcher: whether the projection or the CSV was made from other inputs (no JVM)."""
    tables, models = resources.tables, resources.models
    features, folder = _state(tables, FEATURES), models.current_folder(MODEL)
    projected = tables.state(PROJECTED)
    if projected is None or projected.user_metadata.get("made_from") != {FEATURES: features.identity, MODEL: folder}:
        return True
    return not resources.csv_files.is_current(CSV, _csv_made_from(projected))


register_step_work(MODEL, pca_has_work)
register_step_work("project_features", projection_has_work)


def _state(tables: DeltaTables, name: str) -> TableState:
    state = tables.state(name)
    if state is None:
        raise Failure(f"no table {tables.path(name)}: materialize {name} first", allow_retries=False)
    return state


def _moments(context, pyspark, tables: DeltaTables, models: ModelStore, features: TableState) -> tuple[Moments, str]:
    """The moments of the features' current version: the kept ones updated from the change feed when they
    summarize an earlier version of this very table, else computed from every row."""
    kept = models.file(MODEL, MOMENTS)
    previous = Moments.from_bytes(kept) if kept is not None else None
    spark = pyspark.spark_session
    with job_description(spark, "pca_model: the features' moments"):
        same_table = previous is not None and previous.table is not None
        same_table = same_table and previous.table["table_id"] == features.table_id
        if same_table and previous.table["version"] < features.version:
            try:
                delta = change_moments(tables.changes(FEATURES, previous.table["version"], features.version))
                return (previous + delta).of(features.identity), f"updated from version {previous.table['version']}"
            except Exception as error:  # noqa: BLE001 - a vacuumed or expired change feed: count every row again
                context.log.warning(f"the change feed since version {previous.table['version']} is gone ({error})")
        elif previous is not None and not same_table:
            context.log.info("the kept moments summarize another table (or none known): computed from every row")
        rows = tables.for_workers(FEATURES, features.version)
        return moments_of(rows).of(features.identity), "computed from every row"


@multi_asset(
    outs={
        PROJECTED: AssetOut(
            io_manager_key=DELTA_IO_MANAGER,
            group_name="reduction",
            kinds={"spark", "delta"},
            automation_condition=ON_NEW_DATA,
            description="`path, label, split, pc_1 … pc_k` at full precision: every feature row in the PCA basis.",
        ),
        CSV: AssetOut(
            io_manager_key=CSV_IO_MANAGER,
            group_name="reduction",
            kinds={"spark", "csv"},
            automation_condition=ON_NEW_DATA,
            description="`pca_features.csv`, header `path,label,split,pc_1,…,pc_k`: the reduced matrix as one file "
            "for the app team, ordered by path, components to 6 decimals (the same images give the same bytes).",
        ),
    },
    deps=[FEATURES, MODEL],
    pool=POOL,
    retry_policy=TRANSIENT_FAILURES,
    internal_asset_deps={PROJECTED: {AssetKey(FEATURES), AssetKey(MODEL)}, CSV: {AssetKey(PROJECTED)}},
    check_specs=[
        AssetCheckSpec(
            "csv_has_k_components",
            asset=CSV,
            additional_deps=[FEATURES],
            blocking=True,
            description="Judged on what the write produced, before the file replaces the last one.",
        )
    ],
)
@retried_only_if_transient
def project_features(
    context: AssetExecutionContext,
    pyspark: SparkResource,
    tables: DeltaTables,
    models: ModelStore,
    csv_files: CsvFiles,
    run_guard: RunGuard,
    pyspark_step_launcher: ResourceParam[StepLauncher],
) -> Iterator:
    """Every feature row projected once and stored; the CSV written from those very rows, in path order (kept on
    the executors' disks for the step: never projected twice), or from the stored table when only the CSV is
    missing.

    When neither the features nor the model changed since the stored projection was
    made, it is kept as it is, and the CSV too: no Spark starts.
    """
    features, folder = _state(tables, FEATURES), models.current_folder(MODEL)
    if folder is None:
        raise Failure(f"no {MODEL} under {tables.locations.storage_root}: materialize it first", allow_retries=False)
    made_from = {FEATURES: features.identity, MODEL: folder}
    projected = tables.state(PROJECTED)
    if projected is not None and projected.user_metadata.get("made_from") == made_from:
        commit, metadata, rows = Commit(projected, False, dict(NOTHING_WRITTEN)), {}, None
    else:
        commit, metadata, rows = _project(pyspark, tables, models, features, made_from)
    try:
        yield Output(commit, output_name=PROJECTED, data_version=data_version(commit.state), metadata=metadata)
        k = json.loads(models.file(MODEL, FIT, folder) or b'{"k": 0}')["k"]
        csv_made_from = _csv_made_from(commit.state)
        if csv_files.is_current(CSV, csv_made_from):
            written, verdict = CsvWrite(csv_files.path(CSV), csv_made_from, False), None
        else:
            stored = (rows if rows is not None else tables.read(PROJECTED, commit.state.version)).orderBy("path")
            verdict = {}

            def accept(produced: Produced) -> bool:
                verdict.update(_csv_verdict(produced, k, features.rows))
                return verdict["passed"]

            with job_description(pyspark.spark_session, "pca_features_csv: write CSV"):
                written = csv_files.write(CSV, stored, csv_made_from, accept, CSV_DECIMALS)
    finally:
        if rows is not None:
            rows.unpersist()
    yield Output(written, output_name=CSV, data_version=DataVersion(version_folder(csv_made_from)))
    yield _csv_check(verdict, k, features.rows)


def _project(pyspark, tables: DeltaTables, models: ModelStore, features: TableState, made_from: dict):
    """The features through the model, in one pass, replacing the table in one commit; a scatter plot; and the
    projected rows, kept on disk for the CSV (the caller unpersists them).

    The plot's sample is drawn from the projected rows, their label and first two
    components only, not from the features (a second pass over 1280 floats a row).
    """
    spark = pyspark.spark_session
    projection = projection_of(models, made_from[MODEL])
    rows = project(projection, tables.for_workers(FEATURES, features.version)).persist(StorageLevel.DISK_ONLY)
    with job_description(spark, "pca_features: project every row"):
        commit = tables.replace(PROJECTED, rows, made_from)
    with job_description(spark, "pca_features: sample for the scatter plot"):
        sample = rows.sample(fraction=min(1.0, SCATTER_POINTS / max(features.rows, 1)), seed=0)
        second = F.col("pc_2") if projection.components.shape[1] > 1 else F.lit(0.0).alias("pc_2")
        points = sample.select("label", "pc_1", second).toPandas()
    scatter = pc_scatter_png(points["pc_1"], points["pc_2"], points["label"].fillna(""))
    plot = {"pc_scatter": MetadataValue.md(markdown_image(scatter, "first two principal components"))}
    return commit, plot, rows


def _csv_made_from(projected: TableState) -> dict:
    """The projection's version the CSV is written from, and the writer's format (a file another format wrote is
    written again once: the same rows give the same bytes only from the same writer)."""
    return {PROJECTED: projected.identity, "format": CSV_FORMAT}


def projection_of(models: ModelStore, folder: str) -> Projection:
    """The arrays of the PCA model in `folder`, kept beside it; read from the model itself for a version saved
    before they were."""
    saved = models.file(MODEL, PROJECTION, folder)
    return Projection.from_bytes(saved) if saved is not None else Projection.of(models.load(MODEL, folder))


def _csv_verdict(produced: Produced, k: int, feature_rows: int) -> dict:
    expected = ID_COLUMNS + [f"pc_{i + 1}" for i in range(k)]
    return {
        "passed": produced.columns == expected and produced.rows == feature_rows and produced.not_finite == 0,
        "columns": len(produced.columns),
        "csv_rows": produced.rows,
        "not_finite": produced.not_finite,
    }


def _csv_check(verdict: dict | None, k: int, feature_rows: int) -> AssetCheckResult:
    """The CSV's header, k finite components and one row per image, judged on what its write produced before
    it replaced the previous file (or, when the file was kept, as it was judged when written)."""
    if verdict is None:
        return AssetCheckResult(
            asset_key=AssetKey(CSV),
            check_name="csv_has_k_components",
            passed=True,
            metadata={"k": k, "feature_rows": feature_rows, "judged": "when this file was written (unchanged since)"},
        )
    return AssetCheckResult(
        asset_key=AssetKey(CSV),
        check_name="csv_has_k_components",
        passed=verdict["passed"],
        metadata={**{key: v for key, v in verdict.items() if key != "passed"}, "k": k, "feature_rows": feature_rows},
    )
