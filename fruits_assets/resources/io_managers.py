"""IO managers that keep Spark outputs as Spark-native datasets under the storage root."""

from dagster import ConfigurableIOManager, InputContext, OutputContext, ResourceDependency
from dagster_pyspark import LazyPySparkResource
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame

from fruits_assets.resources.locations import DataLocations


def _asset_name(context: OutputContext | InputContext) -> str:
    return "/".join(context.asset_key.path)


class SparkParquetIOManager(ConfigurableIOManager):
    """A DataFrame asset as a Parquet dataset at `<storage>/<asset name>/`.

    The row count is read back from what was written, so recording it costs no
    recomputation of the DataFrame's lineage (the features are computed once).
    """

    locations: ResourceDependency[DataLocations]
    pyspark: ResourceDependency[LazyPySparkResource]

    def handle_output(self, context: OutputContext, obj: DataFrame) -> None:
        path = self.locations.path_of(_asset_name(context))
        obj.write.mode("overwrite").parquet(path)
        rows = self.pyspark.spark_session.read.parquet(path).count()
        context.add_output_metadata({"path": path, "rows": rows})

    def load_input(self, context: InputContext) -> DataFrame:
        return self.pyspark.spark_session.read.parquet(self.locations.path_of(_asset_name(context)))


class SparkMLModelIOManager(ConfigurableIOManager):
    """A fitted Spark ML `PipelineModel` as its standard directory at `<storage>/<asset name>/`."""

    locations: ResourceDependency[DataLocations]
    pyspark: ResourceDependency[LazyPySparkResource]

    def handle_output(self, context: OutputContext, obj: PipelineModel) -> None:
        path = self.locations.path_of(_asset_name(context))
        obj.write().overwrite().save(path)
        context.add_output_metadata({"path": path})

    def load_input(self, context: InputContext) -> PipelineModel:
        self.pyspark.spark_session  # noqa: B018 - a model loads through the active session
        return PipelineModel.load(self.locations.path_of(_asset_name(context)))
