"""IO managers: Spark outputs as Spark-native datasets, small Python values pickled, all under the storage root."""

import os

from dagster import (
    ConfigurableIOManager,
    FilesystemIOManager,
    InputContext,
    MetadataValue,
    OutputContext,
    ResourceDependency,
)
from dagster_aws.s3 import S3PickleIOManager
from dagster_pyspark import LazyPySparkResource
from pydantic import PrivateAttr
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, Observation
from pyspark.sql import functions as F

from fruits_assets.resources.locations import DataLocations, absolute_location, bucket_and_prefix, uses_s3
from fruits_assets.resources.s3 import EncryptedS3Resource
from fruits_assets.spark.files import recover_interrupted, replace_atomically, write_parquet
from fruits_assets.spark.preview import preview_markdown
from fruits_assets.spark.progress import job_description


def pickle_io_manager(storage_root: str) -> ConfigurableIOManager:
    """Small Python values, pickled at `<storage>/<asset name>`.

    On S3, dagster-aws's S3 IO manager, writing with server-side encryption
    (`FRUITS_KMS_KEY_ID` for SSE-KMS); elsewhere, Dagster's filesystem IO manager.
    """
    if uses_s3(storage_root):
        bucket, prefix = bucket_and_prefix(storage_root)
        s3 = EncryptedS3Resource(kms_key_id=os.environ.get("FRUITS_KMS_KEY_ID"))
        return S3PickleIOManager(s3_resource=s3, s3_bucket=bucket, s3_prefix=prefix)
    return FilesystemIOManager(base_dir=absolute_location(storage_root))


def _asset_name(context: OutputContext | InputContext) -> str:
    return "/".join(context.asset_key.path)


class SparkParquetIOManager(ConfigurableIOManager):
    """A DataFrame asset as a Parquet dataset at `<storage>/<asset name>/`, replaced atomically.

    The row count is observed while the write runs (no second job, no recomputation
    of the lineage: the features are computed once); the preview reads back what was written.
    """

    locations: ResourceDependency[DataLocations]
    pyspark: ResourceDependency[LazyPySparkResource]

    def handle_output(self, context: OutputContext, obj: DataFrame) -> None:
        spark, name = self.pyspark.spark_session, _asset_name(context)
        path = self.locations.path_of(name)
        rows = Observation(f"{name} rows")
        with job_description(spark, f"{name}: write Parquet"):
            write_parquet(spark, obj.observe(rows, F.count(F.lit(1)).alias("rows")), path)
            preview = preview_markdown(spark.read.parquet(path))
        context.add_output_metadata({"path": path, "rows": rows.get["rows"], "preview": MetadataValue.md(preview)})

    def load_input(self, context: InputContext) -> DataFrame:
        spark, name = self.pyspark.spark_session, _asset_name(context)
        spark.sparkContext.setJobDescription(f"{context.op_def.name}: reads {name}")
        path = self.locations.path_of(name)
        recover_interrupted(spark, path)
        return spark.read.parquet(path)


class SparkMLModelIOManager(ConfigurableIOManager):
    """A fitted Spark ML `PipelineModel` as its standard directory at `<storage>/<asset name>/`, replaced atomically.

    A model written in this process is handed to later steps as is: loading one
    back costs a Spark job per stage's metadata, three times a run otherwise.
    """

    locations: ResourceDependency[DataLocations]
    pyspark: ResourceDependency[LazyPySparkResource]
    _written: dict[str, PipelineModel] = PrivateAttr(default_factory=dict)

    def handle_output(self, context: OutputContext, obj: PipelineModel) -> None:
        name = _asset_name(context)
        path = self.locations.path_of(name)
        spark = self.pyspark.spark_session
        with job_description(spark, f"{name}: write model"):
            replace_atomically(spark, path, obj.write().save)
        self._written[path] = obj
        context.add_output_metadata({"path": path})

    def load_input(self, context: InputContext) -> PipelineModel:
        path = self.locations.path_of(_asset_name(context))
        if path in self._written:
            return self._written[path]
        recover_interrupted(self.pyspark.spark_session, path)  # a model loads through the active session
        return PipelineModel.load(path)
