"""PCA reduction of the features: the fitted model, the reduced matrix, and that matrix as one CSV file."""

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    MetadataValue,
    ResourceParam,
    StepLauncher,
    asset,
    asset_check,
)
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fruits_assets.assets.config import PCAConfig, RunConfigCheck
from fruits_assets.assets.plots import explained_variance_png, markdown_image, pc_scatter_png
from fruits_assets.resources.io_managers import CSV_IO_MANAGER, MODEL_IO_MANAGER, PARQUET_IO_MANAGER, csv_file_name
from fruits_assets.resources.locations import DataLocations
from fruits_assets.resources.spark_resource import SparkResource
from fruits_assets.spark.pca import ID_COLUMNS, explained_variance, fit_pca, pca_k, project
from fruits_assets.spark.progress import job_description

PCA_MODEL_KEY = AssetKey("pca_model")
CSV_DECIMALS = 6  # beyond float32 features' precision, and far above run-to-run rounding noise
SCATTER_POINTS = 5000  # a sample is enough to see the clusters, whatever the number of images


@asset(io_manager_key=MODEL_IO_MANAGER, group_name="reduction", kinds={"spark"})
def pca_model(
    context: AssetExecutionContext,
    config: PCAConfig,
    pyspark: SparkResource,
    run_config_check: RunConfigCheck,
    mobilenet_features: DataFrame,
    pyspark_step_launcher: ResourceParam[StepLauncher],
) -> PipelineModel:
    """A Spark ML PipelineModel: StandardScaler (mean and std) then PCA, fitted on all features."""
    if mobilenet_features.isEmpty():
        raise ValueError("no features to fit PCA on: every image was rejected (see the rejected_images asset)")
    with job_description(pyspark.spark_session, "pca_model: fit StandardScaler and PCA"):
        model, explained_all = fit_pca(mobilenet_features, config.k, config.variance_target)
    explained = explained_variance(model)
    plot = explained_variance_png(explained_all, pca_k(model), config.variance_target if config.k is None else None)
    context.add_output_metadata(
        {
            "explained_variance_plot": MetadataValue.md(markdown_image(plot, "explained variance")),
            "k": pca_k(model),
            "variance_target": config.variance_target,
            "k_configured": config.k is not None,
            "explained_variance": [round(v, 6) for v in explained],
            "cumulative_explained_variance": [round(v, 6) for v in np.cumsum(explained)],
            "explained_variance_total": float(sum(explained)),
            "components_in_data": len(explained_all),
        }
    )
    return model


@asset(io_manager_key=PARQUET_IO_MANAGER, group_name="reduction", kinds={"spark", "parquet"})
def pca_features(
    context: AssetExecutionContext,
    pyspark: SparkResource,
    run_config_check: RunConfigCheck,
    pca_model: PipelineModel,
    mobilenet_features: DataFrame,
    pyspark_step_launcher: ResourceParam[StepLauncher],
) -> DataFrame:
    """`path, label, split, pc_1 … pc_k` at full precision, ordered by path: the features in the PCA's basis.

    The UI shows the first two components of a sample, coloured by label.
    """
    with job_description(pyspark.spark_session, "pca_features: sample for the scatter plot"):
        rows = mobilenet_features.count()
        sample = mobilenet_features.sample(fraction=min(1.0, SCATTER_POINTS / max(rows, 1)), seed=0)
        second = F.col("pc_2") if pca_k(pca_model) > 1 else F.lit(0.0).alias("pc_2")
        points = project(pca_model, sample).select("label", "pc_1", second).toPandas()
    scatter = pc_scatter_png(points["pc_1"], points["pc_2"], points["label"].fillna(""))
    context.add_output_metadata(
        {
            "pc_scatter": MetadataValue.md(markdown_image(scatter, "first two principal components")),
            "k": pca_k(pca_model),
        }
    )
    return project(pca_model, mobilenet_features)


@asset(io_manager_key=CSV_IO_MANAGER, group_name="reduction", kinds={"spark", "csv"})
def pca_features_csv(
    run_config_check: RunConfigCheck, pca_features: DataFrame, pyspark_step_launcher: ResourceParam[StepLauncher]
) -> DataFrame:
    """`pca_features.csv` (header `path,label,split,pc_1,…,pc_k`): the reduced matrix as one file, for the app team.

    Rows are ordered by path and components rounded to 6 decimals (`pca_features`
    keeps full precision): the same images give the same CSV, byte for byte.
    """
    pcs = [F.round(c, CSV_DECIMALS).alias(c) for c in pca_features.columns if c not in ID_COLUMNS]
    return pca_features.orderBy("path").select(*ID_COLUMNS, *pcs)


@asset_check(asset=pca_model, description="The model's explained variance reaches the target it was fitted for.")
def explained_variance_reaches_target(
    context: AssetCheckExecutionContext, pca_model: PipelineModel, pyspark_step_launcher: ResourceParam[StepLauncher]
) -> AssetCheckResult:
    event = context.instance.get_latest_materialization_event(PCA_MODEL_KEY)
    recorded = event.asset_materialization.metadata if event and event.asset_materialization else {}
    target = float(recorded["variance_target"].value) if "variance_target" in recorded else PCAConfig().variance_target
    k_configured = bool(recorded["k_configured"].value) if "k_configured" in recorded else False
    total = float(sum(explained_variance(pca_model)))
    return AssetCheckResult(
        passed=total >= target,
        # A k chosen by hand may knowingly fall short of the target: warn, don't fail.
        severity=AssetCheckSeverity.WARN if k_configured else AssetCheckSeverity.ERROR,
        metadata={"explained_variance_total": total, "variance_target": target, "k": pca_k(pca_model)},
    )


@asset_check(
    asset=pca_features_csv,
    additional_ins={"pca_model": AssetIn("pca_model"), "mobilenet_features": AssetIn("mobilenet_features")},
    description="The CSV has path, label, split and k finite components, one row per featurized image.",
)
def csv_has_k_components(
    locations: DataLocations,
    pca_model: PipelineModel,
    mobilenet_features: DataFrame,
    pyspark_step_launcher: ResourceParam[StepLauncher],
) -> AssetCheckResult:
    k = pca_k(pca_model)
    table = pd.read_csv(
        locations.path_of(csv_file_name(pca_features_csv.key.to_user_string())),
        keep_default_na=False,
        na_values={"split": [""]},
    )
    expected = ID_COLUMNS + [f"pc_{i + 1}" for i in range(k)]
    pcs = table[expected[3:]].to_numpy(dtype=float) if list(table.columns) == expected else np.empty(0)
    rows = mobilenet_features.count()
    return AssetCheckResult(
        passed=list(table.columns) == expected and len(table) == rows and bool(np.isfinite(pcs).all()) and pcs.size > 0,
        metadata={"columns": len(table.columns), "k": k, "csv_rows": len(table), "feature_rows": rows},
    )
