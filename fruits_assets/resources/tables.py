"""The project's Delta Lake tables under the storage root, by asset name: what the IO manager and the assets share."""

from dagster import ConfigurableResource, ResourceDependency
from pyspark.sql import DataFrame

from fruits_assets.resources.locations import DataLocations
from fruits_assets.resources.spark_resource import SparkResource
from fruits_assets.spark import delta

TABLES = "tables"


class DeltaTables(ConfigurableResource):
    """Each table asset at `<storage>/<asset name>/`: read its latest (or any retained) version, or its changes.

    Assets that merge their changes (a run costs what changed) read their own
    previous version here; the Delta IO manager writes through the same functions.
    """

    locations: ResourceDependency[DataLocations]
    pyspark: ResourceDependency[SparkResource]

    def path(self, name: str) -> str:
        return self.locations.path_of(name)

    def read(self, name: str, version: int | None = None) -> DataFrame | None:
        return delta.read(self.pyspark.spark_session, self.path(name), version)

    def version(self, name: str) -> int | None:
        return delta.latest_version(self.pyspark.spark_session, self.path(name))

    def rows(self, name: str) -> int:
        return delta.rows(self.pyspark.spark_session, self.path(name))

    def sources(self, name: str) -> dict | None:
        """What the table's latest version was made from, as its writer recorded it (None if not recorded)."""
        return delta.made_from(self.pyspark.spark_session, self.path(name))

    def made_from(self, name: str) -> dict:
        """What a table derived from `name` is made from: its latest version."""
        return {"table": name, "version": self.version(name)}

    def changes(self, name: str, after_version: int, up_to_version: int) -> DataFrame:
        return delta.changes(self.pyspark.spark_session, self.path(name), after_version, up_to_version)
