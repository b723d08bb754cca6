"""The Dagster definitions: the asset graph, its checks, and the local deployment's resources."""

import os

from dagster import Definitions, EnvVar, in_process_executor, load_asset_checks_from_modules, load_assets_from_modules

from fruits_assets.assets import features, images, pca
from fruits_assets.resources.io_managers import SparkMLModelIOManager, SparkParquetIOManager
from fruits_assets.resources.locations import DEFAULT_STORAGE, DataLocations
from fruits_assets.resources.spark import local_pyspark

ASSET_MODULES = [images, features, pca]


def build_defs(images_root: str | EnvVar, storage_root: str) -> Definitions:
    """The whole graph, reading images from `images_root` and storing under `storage_root`."""
    images_location = images_root if isinstance(images_root, str) else images_root.get_value() or ""
    pyspark = local_pyspark(images_location, storage_root)
    locations = DataLocations(images=images_root, storage=storage_root)
    return Definitions(
        assets=load_assets_from_modules(ASSET_MODULES),
        asset_checks=load_asset_checks_from_modules(ASSET_MODULES),
        resources={
            "pyspark": pyspark,
            "locations": locations,
            images.SPARK_PARQUET: SparkParquetIOManager(locations=locations, pyspark=pyspark),
            pca.SPARK_ML: SparkMLModelIOManager(locations=locations, pyspark=pyspark),
        },
        # One process runs every step, so one Spark session (one JVM) serves the whole run.
        executor=in_process_executor,
    )


defs = build_defs(EnvVar("FRUITS_IMAGES"), os.environ.get("FRUITS_STORAGE", str(DEFAULT_STORAGE)))
