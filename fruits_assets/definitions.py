"""The Dagster definitions: the asset graph, its checks, and the resources of the chosen deployment.

`FRUITS_DEPLOYMENT` picks the deployment: `local` (default: local Spark, local files
or S3), `cluster` (any Spark master, `FRUITS_SPARK_MASTER`; images and storage on
S3 or a file system every node shares) or `emr` (each Spark step runs on an EMR
cluster through dagster-aws's step launcher; storage on S3).
"""

import os

from dagster import (
    Definitions,
    EnvVar,
    ResourceDefinition,
    in_process_executor,
    load_asset_checks_from_modules,
    load_assets_from_modules,
)
from dagster._core.definitions.no_step_launcher import no_step_launcher

from fruits_assets.assets import features, images, pca
from fruits_assets.resources.emr import emr_step_launcher
from fruits_assets.resources.io_managers import SparkMLModelIOManager, SparkParquetIOManager, pickle_io_manager
from fruits_assets.resources.locations import DEFAULT_STORAGE, DataLocations
from fruits_assets.resources.spark import (
    STEP_LAUNCHER,
    PySparkSession,
    cluster_spark_config,
    emr_spark_config,
    local_spark_config,
    pyspark_session,
)

ASSET_MODULES = [images, features, pca]
DEPLOYMENTS = ("local", "cluster", "emr")


def spark_for(deployment: str, *locations: str) -> PySparkSession:
    """The one PySpark resource of a deployment."""
    if deployment == "local":
        return pyspark_session(local_spark_config(), *locations)
    if deployment == "cluster":
        master = os.environ.get("FRUITS_SPARK_MASTER")
        if not master:
            raise ValueError("FRUITS_DEPLOYMENT=cluster needs FRUITS_SPARK_MASTER (e.g. spark://host:7077)")
        return pyspark_session(cluster_spark_config(master), *locations)
    if deployment == "emr":
        return PySparkSession(spark_config=emr_spark_config())
    raise ValueError(f"unknown FRUITS_DEPLOYMENT {deployment!r}: expected one of {', '.join(DEPLOYMENTS)}")


def step_launcher_for(deployment: str) -> ResourceDefinition:
    """EMR's step launcher where the run is orchestrated; none inside the step that spark-submit started."""
    inside_spark_submit = "PYSPARK_GATEWAY_PORT" in os.environ
    return emr_step_launcher if deployment == "emr" and not inside_spark_submit else no_step_launcher


def build_defs(images_root: str | EnvVar, storage_root: str, deployment: str = "local") -> Definitions:
    """The whole graph, reading images from `images_root` and storing under `storage_root`."""
    images_location = images_root if isinstance(images_root, str) else images_root.get_value() or ""
    pyspark = spark_for(deployment, images_location, storage_root)
    locations = DataLocations(images=images_root, storage=storage_root)
    return Definitions(
        assets=load_assets_from_modules(ASSET_MODULES),
        asset_checks=load_asset_checks_from_modules(ASSET_MODULES),
        resources={
            "pyspark": pyspark,
            STEP_LAUNCHER: step_launcher_for(deployment),
            "locations": locations,
            images.SPARK_PARQUET: SparkParquetIOManager(locations=locations, pyspark=pyspark),
            pca.SPARK_ML: SparkMLModelIOManager(locations=locations, pyspark=pyspark),
            "io_manager": pickle_io_manager(storage_root),
        },
        # One process runs every step, so one Spark session (one JVM) serves the whole run.
        executor=in_process_executor,
    )


defs = build_defs(
    EnvVar("FRUITS_IMAGES"),
    os.environ.get("FRUITS_STORAGE", str(DEFAULT_STORAGE)),
    os.environ.get("FRUITS_DEPLOYMENT", "local"),
)
