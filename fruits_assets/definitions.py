"""The Dagster definitions: the asset graph, its checks, and the resources of the chosen deployment.

`FRUITS_DEPLOYMENT` picks a row of `RESOURCES_BY_DEPLOYMENT`: `local` (default:
local Spark, local files or S3), `cluster` (any Spark master; images and storage on
S3 or a file system every node shares) or `emr` (each Spark step runs on an EMR
cluster through dagster-aws's step launcher; storage on S3). The assets, checks and
IO managers are the same in every row; only Spark's session and the step launcher differ.
"""

import gc
import sys
from collections.abc import Callable
from typing import Any

from dagster import (
    Definitions,
    ResourceDefinition,
    definitions,
    in_process_executor,
    load_assets_from_modules,
)

from fruits_assets.assets import classification, features, images, pca
from fruits_assets.assets.automation import build_automation_sensor, build_freshness, build_photo_sensor
from fruits_assets.assets.config import RunGuard
from fruits_assets.resources.csv_files import CSV_FILES, CsvFiles
from fruits_assets.resources.emr import emr_step_launcher
from fruits_assets.resources.guard import GUARD
from fruits_assets.resources.io_managers import (
    CSV_IO_MANAGER,
    DELTA_IO_MANAGER,
    JSON_IO_MANAGER,
    MODEL_IO_MANAGER,
    CsvIOManager,
    DeltaIOManager,
    JsonIOManager,
    SparkMLModelIOManager,
)
from fruits_assets.resources.locations import LOCATIONS, DataLocations
from fruits_assets.resources.models import MODELS, ModelStore
from fruits_assets.resources.s3 import EncryptedS3Resource
from fruits_assets.resources.spark_resource import PYSPARK, STEP_LAUNCHER, SparkResource
from fruits_assets.resources.tables import TABLES, DeltaTables
from fruits_assets.settings import Settings
from fruits_assets.spark.config import (
    app_config,
    cluster_config,
    file_system_config,
    jars_config,
    local_config,
    s3a_config,
)

ASSET_MODULES = [images, features, pca, classification]
# The feature pipeline, images to the CSV, without the classifier and the phone's model (`--select` syntax).
FEATURE_PIPELINE = "group:images or group:features or group:reduction"
NO_STEP_LAUNCHER = ResourceDefinition.none_resource(description="Every step runs in the run's own process.")


def _spark(settings: Settings, deployment_config: dict[str, str]) -> SparkResource:
    """The session of a deployment run from here: the app's settings, the deployment's, Delta's jars, and
    S3A's where the data is on S3 (else the file system's)."""
    config = app_config(settings.worker_python, driver_python=sys.executable) | deployment_config
    if settings.needs_s3:
        config |= s3a_config(settings.aws_endpoint_url, settings.aws_region, settings.kms_key_id)
    else:
        config |= file_system_config()
    return SparkResource(
        spark_config=config | jars_config("delta", *(["s3a"] if settings.needs_s3 else [])),
        keep_warm_seconds=settings.keep_warm_seconds,
        trim_native_heap=True,
    )


def local_resources(settings: Settings) -> dict[str, Any]:
    return {PYSPARK: _spark(settings, local_config()), STEP_LAUNCHER: NO_STEP_LAUNCHER}


def cluster_resources(settings: Settings) -> dict[str, Any]:
    return {
        PYSPARK: _spark(settings, cluster_config(settings.spark_master or "", settings.driver_ip)),
        STEP_LAUNCHER: NO_STEP_LAUNCHER,
    }


def emr_resources(settings: Settings) -> dict[str, Any]:
    """On the orchestrating host, the EMR step launcher; inside a step, YARN, EMRFS and Delta from the cluster."""
    spark = SparkResource(spark_config=app_config(settings.worker_python, driver_python=sys.executable))
    if settings.inside_spark_submit:
        return {PYSPARK: spark, STEP_LAUNCHER: NO_STEP_LAUNCHER}
    launcher = emr_step_launcher(
        settings.emr_cluster_id or "",
        settings.staging,
        settings.aws_region,
        settings.kms_key_id,
        settings.step_environment(),
        settings.emr_poll_seconds,
    )
    return {PYSPARK: spark, STEP_LAUNCHER: launcher}


RESOURCES_BY_DEPLOYMENT: dict[str, Callable[[Settings], dict[str, Any]]] = {
    "local": local_resources,
    "cluster": cluster_resources,
    "emr": emr_resources,
}


def build_defs(settings: Settings) -> Definitions:
    """The whole graph, reading and storing where `settings` say, on their deployment's resources."""
    resources = RESOURCES_BY_DEPLOYMENT[settings.deployment](settings)
    pyspark = resources[PYSPARK]
    locations = DataLocations(
        images=settings.images,
        storage=settings.storage,
        kms_key_id=settings.kms_key_id,
        aws_endpoint_url=settings.aws_endpoint_url,
        aws_region=settings.aws_region,
    )
    s3 = EncryptedS3Resource(
        kms_key_id=settings.kms_key_id, region_name=settings.aws_region, endpoint_url=settings.aws_endpoint_url
    )
    # Inside a step on EMR the orchestrating run holds the storage root's lock; the step checks it is still held.
    guard = RunGuard(
        locations=locations,
        s3=s3,
        holds_lock=not settings.inside_spark_submit,
        renew_seconds=settings.lock_renew_seconds,
        stale_seconds=settings.lock_stale_seconds,
        pause_after_commit=settings.pause_after_commit,
    )
    tables = DeltaTables(locations=locations, pyspark=pyspark, guard=guard)
    models = ModelStore(locations=locations, pyspark=pyspark, guard=guard)
    csv_files = CsvFiles(locations=locations, pyspark=pyspark, guard=guard)
    freshness_checks, freshness_schedule = build_freshness(settings.freshness_hours)
    return Definitions(
        assets=load_assets_from_modules(ASSET_MODULES),
        asset_checks=freshness_checks,
        sensors=[
            build_photo_sensor(settings.images_queue, round(settings.sensor_seconds), settings.reconcile_hours * 3600),
            build_automation_sensor(locations.storage_root, round(settings.automation_seconds)),
        ],
        schedules=[freshness_schedule],
        resources={
            **resources,
            LOCATIONS: locations,
            TABLES: tables,
            MODELS: models,
            CSV_FILES: csv_files,
            GUARD: guard,
            DELTA_IO_MANAGER: DeltaIOManager(tables=tables),
            CSV_IO_MANAGER: CsvIOManager(files=csv_files),
            MODEL_IO_MANAGER: SparkMLModelIOManager(models=models),
            JSON_IO_MANAGER: JsonIOManager(locations=locations, guard=guard),
        },
        # One process runs every step, so one Spark session (one JVM) serves the whole run.
        executor=in_process_executor,
    )


@definitions
def defs() -> Definitions:
    """What `dagster` loads: the settings the environment holds, read when the definitions load, not on import."""
    return build_defs(Settings.from_environment())


# What the imports above built (Dagster's, Spark's and boto's modules: some 300,000 objects) lives as long as the
# process: frozen, the garbage collector never walks it again, in a run or at the process's exit (0.6 s).
gc.freeze()
