"""IO managers: each owns how one kind of asset is stored under the storage root, and their keys.

Spark outputs are Spark-native datasets, the reduced matrix one CSV file, small
Python values JSON; every one is replaced atomically (see `spark.files`).
"""

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from dagster import ConfigurableIOManager, InputContext, MetadataValue, OutputContext, ResourceDependency
from pydantic import PrivateAttr
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, Observation
from pyspark.sql import functions as F

from fruits_assets.resources.locations import DataLocations
from fruits_assets.resources.s3 import EncryptedS3Resource
from fruits_assets.resources.spark_resource import SparkResource
from fruits_assets.spark.files import recover_interrupted, replace_atomically, write_parquet, write_single_csv
from fruits_assets.spark.preview import preview_markdown
from fruits_assets.spark.progress import job_description
from fruits_assets.vision.paths import bucket_and_prefix, uses_s3

PARQUET_IO_MANAGER = "spark_parquet_io_manager"
MODEL_IO_MANAGER = "spark_ml_io_manager"
CSV_IO_MANAGER = "spark_csv_io_manager"
JSON_IO_MANAGER = "json_io_manager"


def asset_name(context: OutputContext | InputContext) -> str:
    return "/".join(context.asset_key.path)


def csv_file_name(asset: str) -> str:
    """The file the CSV IO manager writes asset `<name>_csv` to: `<name>.csv`."""
    return asset.removesuffix("_csv") + ".csv"


class SparkParquetIOManager(ConfigurableIOManager):
    """A DataFrame asset as a Parquet dataset at `<storage>/<asset name>/`, replaced atomically.

    The row count is observed while the write runs (no second job, no recomputation
    of the lineage: the features are computed once); the preview reads back what was written.
    """

    locations: ResourceDependency[DataLocations]
    pyspark: ResourceDependency[SparkResource]

    def handle_output(self, context: OutputContext, obj: DataFrame) -> None:
        spark, name = self.pyspark.spark_session, asset_name(context)
        path = self.locations.path_of(name)
        rows = Observation(f"{name} rows")
        with job_description(spark, f"{name}: write Parquet"):
            write_parquet(spark, obj.observe(rows, F.count(F.lit(1)).alias("rows")), path)
            preview = preview_markdown(spark.read.parquet(path))
        context.add_output_metadata({"path": path, "rows": rows.get["rows"], "preview": MetadataValue.md(preview)})

    def load_input(self, context: InputContext) -> DataFrame:
        spark, name = self.pyspark.spark_session, asset_name(context)
        spark.sparkContext.setJobDescription(f"{context.op_def.name}: reads {name}")
        path = self.locations.path_of(name)
        recover_interrupted(spark, path)
        return spark.read.parquet(path)


class SparkCsvIOManager(ConfigurableIOManager):
    """A DataFrame asset `<name>_csv` as one RFC 4180 file `<storage>/<name>.csv`, in the DataFrame's order.

    One file, header first, replaced atomically: what spreadsheets, pandas and
    the app team read without Spark.
    """

    locations: ResourceDependency[DataLocations]
    pyspark: ResourceDependency[SparkResource]

    def path_for(self, context: OutputContext | InputContext) -> str:
        return self.locations.path_of(csv_file_name(asset_name(context)))

    def handle_output(self, context: OutputContext, obj: DataFrame) -> None:
        spark, path = self.pyspark.spark_session, self.path_for(context)
        rows = Observation(f"{asset_name(context)} rows")
        with job_description(spark, f"{asset_name(context)}: write CSV"):
            write_single_csv(spark, obj.observe(rows, F.count(F.lit(1)).alias("rows")), path)
        context.add_output_metadata({"path": path, "rows": rows.get["rows"]})

    def load_input(self, context: InputContext) -> DataFrame:
        reader = self.pyspark.spark_session.read.option("header", "true").option("escape", '"')
        return reader.option("inferSchema", "true").csv(self.path_for(context))


class SparkMLModelIOManager(ConfigurableIOManager):
    """A fitted Spark ML `PipelineModel` as its standard directory at `<storage>/<asset name>/`, replaced atomically.

    A model written in this process is handed to later steps as is: loading one
    back costs a Spark job per stage's metadata, three times a run otherwise.
    """

    locations: ResourceDependency[DataLocations]
    pyspark: ResourceDependency[SparkResource]
    _written: dict[str, PipelineModel] = PrivateAttr(default_factory=dict)

    def handle_output(self, context: OutputContext, obj: PipelineModel) -> None:
        name = asset_name(context)
        path = self.locations.path_of(name)
        spark = self.pyspark.spark_session
        with job_description(spark, f"{name}: write model"):
            replace_atomically(spark, path, obj.write().save)
        self._written[path] = obj
        context.add_output_metadata({"path": path})

    def load_input(self, context: InputContext) -> PipelineModel:
        path = self.locations.path_of(asset_name(context))
        if path in self._written:
            return self._written[path]
        recover_interrupted(self.pyspark.spark_session, path)  # a model loads through the active session
        return PipelineModel.load(path)


class JsonIOManager(ConfigurableIOManager):
    """A small Python value (plain data) as `<storage>/<asset name>.json`, readable by anyone, never unpickled.

    Locally the file is written beside its name and renamed into place; on S3 it
    is one `PutObject`, atomic too, with server-side encryption.
    """

    locations: ResourceDependency[DataLocations]
    s3: ResourceDependency[EncryptedS3Resource]

    def path_for(self, context: OutputContext | InputContext) -> str:
        return self.locations.path_of(asset_name(context) + ".json")

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        path, text = self.path_for(context), json.dumps(obj, ensure_ascii=False, indent=1, sort_keys=True)
        if uses_s3(path):
            bucket, key = bucket_and_prefix(path)
            self.s3.get_client().put_object(Bucket=bucket, Key=key, Body=text.encode(), ContentType="application/json")
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            folder, name = Path(path).parent, Path(path).name
            with tempfile.NamedTemporaryFile(
                "w", dir=folder, prefix=f".{name}.", delete=False, encoding="utf-8"
            ) as file:
                file.write(text)
            os.replace(file.name, path)
        context.add_output_metadata({"path": path})

    def load_input(self, context: InputContext) -> Any:
        path = self.path_for(context)
        if uses_s3(path):
            bucket, key = bucket_and_prefix(path)
            return json.loads(self.s3.get_client().get_object(Bucket=bucket, Key=key)["Body"].read())
        return json.loads(Path(path).read_text(encoding="utf-8"))
