"""PCA reduction of the features: the fitted model, the reduced matrix, and that matrix as one CSV file."""

from collections.abc import Iterator

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetOut,
    MetadataValue,
    Output,
    ResourceParam,
    StepLauncher,
    asset,
    multi_asset,
)
from pyspark.sql import functions as F

from fruits_assets.assets.config import PCAConfig, RunGuard
from fruits_assets.assets.plots import explained_variance_png, markdown_image, pc_scatter_png
from fruits_assets.resources.io_managers import CSV_IO_MANAGER, DELTA_IO_MANAGER, MODEL_IO_MANAGER, csv_path
from fruits_assets.resources.models import FittedModel, ModelStore
from fruits_assets.resources.spark_resource import SparkResource
from fruits_assets.resources.tables import DeltaTables
from fruits_assets.spark.delta import Replacement
from fruits_assets.spark.moments import Moments, change_moments, moments_of
from fruits_assets.spark.pca import ID_COLUMNS, explained_variance, fit_pca, pca_k, project
from fruits_assets.spark.progress import job_description

FEATURES, MODEL, PROJECTED = "mobilenet_features", "pca_model", "pca_features"
MOMENTS = "moments.npz"
CSV_DECIMALS = 6  # beyond float32 features' precision, and far above run-to-run rounding noise
SCATTER_POINTS = 5000  # a sample is enough to see the clusters, whatever the number of images


@asset(
    io_manager_key=MODEL_IO_MANAGER,
    group_name="reduction",
    kinds={"spark"},
    deps=[FEATURES],
    check_specs=[AssetCheckSpec("explained_variance_reaches_target", asset=MODEL)],
)
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
    table version they summarize and updated with the rows later versions added and
    removed: refitting after a 1% change reads 1% of the features.
    """
    spark = pyspark.spark_session
    version = tables.version(FEATURES)
    kept = models.file(MODEL, MOMENTS)
    previous = Moments.from_bytes(kept) if kept is not None else None
    with job_description(spark, "pca_model: the features' moments"):
        if previous is not None and previous.version == version:
            moments, source = previous, "unchanged"
        elif previous is not None and previous.version is not None and previous.version < version:
            delta = change_moments(tables.changes(FEATURES, previous.version, version))
            moments, source = (previous + delta).at(version), f"updated from version {previous.version}"
        else:
            moments, source = moments_of(tables.read(FEATURES, version)).at(version), "computed from every row"
    if moments.count == 0:
        raise ValueError("no features to fit PCA on: every image was rejected (see the rejected_images asset)")
    model, spectrum = fit_pca(moments, config.k, config.variance_target)
    explained = explained_variance(model)
    total = float(sum(explained))
    plot = explained_variance_png(spectrum, pca_k(model), config.variance_target if config.k is None else None)
    fitted_from = {"features_version": version, "k": config.k, "variance_target": config.variance_target}
    yield Output(
        FittedModel(model, fitted_from, {MOMENTS: moments.to_bytes()}),
        metadata={
            "explained_variance_plot": MetadataValue.md(markdown_image(plot, "explained variance")),
            "k": pca_k(model),
            "variance_target": config.variance_target,
            "k_configured": config.k is not None,
            "explained_variance": [round(v, 6) for v in explained],
            "cumulative_explained_variance": [round(v, 6) for v in np.cumsum(explained)],
            "explained_variance_total": total,
            "components_in_data": len(spectrum),
            "rows": moments.count,
            "features_version": version,
            "moments": source,
        },
    )
    yield AssetCheckResult(
        check_name="explained_variance_reaches_target",
        passed=total >= config.variance_target,
        # A k chosen by hand may knowingly fall short of the target: warn, don't fail.
        severity=AssetCheckSeverity.WARN if config.k is not None else AssetCheckSeverity.ERROR,
        metadata={"explained_variance_total": total, "variance_target": config.variance_target, "k": pca_k(model)},
    )


@multi_asset(
    outs={
        "pca_features": AssetOut(
            io_manager_key=DELTA_IO_MANAGER,
            group_name="reduction",
            kinds={"spark", "delta"},
            description="`path, label, split, pc_1 … pc_k` at full precision: every feature row in the PCA basis.",
        ),
        "pca_features_csv": AssetOut(
            io_manager_key=CSV_IO_MANAGER,
            group_name="reduction",
            kinds={"spark", "csv"},
            description="`pca_features.csv`, header `path,label,split,pc_1,…,pc_k`: the reduced matrix as one file "
            "for the app team, ordered by path, components to 6 decimals (the same images give the same bytes).",
        ),
    },
    deps=[FEATURES, MODEL],
    internal_asset_deps={
        "pca_features": {AssetKey(FEATURES), AssetKey(MODEL)},
        "pca_features_csv": {AssetKey("pca_features")},
    },
    check_specs=[AssetCheckSpec("csv_has_k_components", asset="pca_features_csv", additional_deps=[FEATURES])],
)
def project_features(
    context: AssetExecutionContext,
    pyspark: SparkResource,
    tables: DeltaTables,
    models: ModelStore,
    run_guard: RunGuard,
    pyspark_step_launcher: ResourceParam[StepLauncher],
) -> Iterator:
    """Every feature row projected once and stored; the CSV written from what was stored.

    When neither the features nor the model changed since the stored projection was
    made, it is kept as it is (and the CSV too).
    """
    spark = pyspark.spark_session
    features_version, model = tables.version(FEATURES), models.load(MODEL)
    made_from = {"features_version": features_version, "model": models.current_folder(MODEL)}
    rows = tables.rows(FEATURES)
    if tables.sources(PROJECTED) == made_from:
        yield Output(Replacement(rows=None, made_from=made_from), output_name=PROJECTED)
    else:
        with job_description(spark, "pca_features: sample for the scatter plot"):
            features = tables.read(FEATURES, features_version)
            sample = features.sample(fraction=min(1.0, SCATTER_POINTS / max(rows, 1)), seed=0)
            second = F.col("pc_2") if pca_k(model) > 1 else F.lit(0.0).alias("pc_2")
            points = project(model, sample).select("label", "pc_1", second).toPandas()
        scatter = pc_scatter_png(points["pc_1"], points["pc_2"], points["label"].fillna(""))
        yield Output(
            Replacement(rows=project(model, features), made_from=made_from),
            output_name=PROJECTED,
            metadata={"pc_scatter": MetadataValue.md(markdown_image(scatter, "first two principal components"))},
        )
    stored = tables.read(PROJECTED)
    pcs = [F.round(c, CSV_DECIMALS).alias(c) for c in stored.columns if c not in ID_COLUMNS]
    yield Output(
        Replacement(rows=stored.orderBy("path").select(*ID_COLUMNS, *pcs), made_from=tables.made_from(PROJECTED)),
        output_name="pca_features_csv",
    )
    yield _csv_check(csv_path(tables.locations, "pca_features_csv"), pca_k(model), rows)


def _csv_check(path: str, k: int, feature_rows: int) -> AssetCheckResult:
    """The CSV read back by pandas, an independent reader: the header, k finite components, one row per image."""
    table = pd.read_csv(path, keep_default_na=False, na_values={"split": [""]})
    expected = ID_COLUMNS + [f"pc_{i + 1}" for i in range(k)]
    pcs = table[expected[3:]].to_numpy(dtype=float) if list(table.columns) == expected else np.empty(0)
    return AssetCheckResult(
        asset_key=AssetKey("pca_features_csv"),
        check_name="csv_has_k_components",
        passed=list(table.columns) == expected
        and len(table) == feature_rows
        and bool(np.isfinite(pcs).all())
        and pcs.size > 0,
        metadata={"columns": len(table.columns), "k": k, "csv_rows": len(table), "feature_rows": feature_rows},
    )
