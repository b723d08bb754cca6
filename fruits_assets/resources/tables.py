"""The project's Delta Lake tables under the storage root, by asset name: read, changed, described.

What a table holds is read from its log without a JVM (`state`): a step decides
whether it has work before Spark starts. Every commit passes the run guard first:
a run that lost the storage root's lock commits nothing more.
"""

from dagster import ConfigurableResource, DataVersion, ResourceDependency
from pyspark.sql import DataFrame

from fruits_assets.resources.guard import StorageGuard
from fruits_assets.resources.locations import DataLocations
from fruits_assets.resources.spark_resource import SparkResource
from fruits_assets.spark import delta
from fruits_assets.spark.delta import Changes, Commit
from fruits_assets.spark.worker_files import WorkerFiles
from fruits_assets.vision.delta_log import TableState, read_columns, table_state

TABLES = "tables"


def data_version(state: TableState) -> DataVersion:
    """A table's data version for Dagster: the table's id and version, which name its content."""
    return DataVersion(f"{state.table_id}:{state.version}")


class DeltaTables(ConfigurableResource):
    """Each table asset at `<storage>/<asset name>/`: its state from the log, its rows through Spark, its commits."""

    locations: ResourceDependency[DataLocations]
    pyspark: ResourceDependency[SparkResource]
    guard: ResourceDependency[StorageGuard]

    def path(self, name: str) -> str:
        return self.locations.path_of(name)

    def state(self, name: str) -> TableState | None:
        """The latest version as the log describes it (identity, rows, last commit): no JVM."""
        return table_state(self.path(name), self.locations.delta_options)

    def columns(self, name: str, columns: list[str]):
        """Some columns of the latest version, as Arrow, read by delta-rs (no JVM); None without a table."""
        return read_columns(self.path(name), columns, self.locations.delta_options)

    def read(self, name: str, version: int | None = None) -> DataFrame | None:
        return delta.read(self.pyspark.spark_session, self.path(name), version, self.locations.delta_options)

    def for_workers(self, name: str, version: int) -> DataFrame | WorkerFiles | None:
        """A version for a transform in the Python workers: its files, read there, where they hold its rows."""
        return delta.for_workers(self.pyspark.spark_session, self.path(name), version, self.locations.delta_options)

    def merge(self, name: str, changes: Changes, made_from: dict | None = None) -> Commit:
        """Merge `changes` by path in one commit, once the guard says this run still holds the storage root."""
        self.guard.check()
        spark = self.pyspark.spark_session
        commit = delta.merge(spark, self.path(name), changes, self.locations.delta_options, made_from)
        return self._maintained(name, commit)

    def append(self, name: str, rows: DataFrame) -> Commit:
        """Add rows whose paths the table does not hold (the caller knows), in one commit, with no join."""
        self.guard.check()
        commit = delta.append(self.pyspark.spark_session, self.path(name), rows, self.locations.delta_options)
        return self._maintained(name, commit)

    def replace(self, name: str, rows: DataFrame, made_from: dict) -> Commit:
        """Every row replaced by `rows` in one commit, recording what they were made from."""
        self.guard.check()
        spark = self.pyspark.spark_session
        commit = delta.overwrite(spark, self.path(name), rows, made_from, self.locations.delta_options)
        return self._maintained(name, commit)

    def _maintained(self, name: str, commit: Commit) -> Commit:
        if commit.committed:
            self.guard.committed(name)
        if commit.committed and commit.state.version % delta.MAINTAIN_EVERY == 0:
            delta.maintain(self.pyspark.spark_session, self.path(name), commit.state.version)
            return Commit(self.state(name) or commit.state, True, commit.metrics)
        return commit

    def changes(self, name: str, after_version: int, up_to_version: int) -> DataFrame:
        return delta.changes(self.pyspark.spark_session, self.path(name), after_version, up_to_version)
