"""CSV files under the storage root: `<storage>/<name>.csv` from an asset `<name>_csv`, with what it was made from.

Beside each file, `<name>.csv.json` records what it was written from, written after
the file: a CSV already made from the same inputs is not written again, and one
whose record is missing or older is.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass

from dagster import ConfigurableResource, ResourceDependency
from pyspark.sql import DataFrame

from fruits_assets.resources.guard import StorageGuard
from fruits_assets.resources.locations import DataLocations
from fruits_assets.resources.spark_resource import SparkResource
from fruits_assets.spark.files import Produced, write_csv
from fruits_assets.vision.storage import encryption_params

CSV_FILES = "csv_files"


@dataclass(frozen=True)
class CsvWrite:
    """A CSV as it stands after its step: where, its rows and bytes, what it was made from, if written now."""

    path: str
    made_from: dict
    written: bool
    rows: int | None = None
    bytes: int | None = None
    produced: Produced | None = None


class CsvFiles(ConfigurableResource):
    """Each CSV asset as one file under the storage root, replaced only once the caller accepts what was written."""

    locations: ResourceDependency[DataLocations]
    pyspark: ResourceDependency[SparkResource]
    guard: ResourceDependency[StorageGuard]

    def path(self, asset: str) -> str:
        """Where asset `<name>_csv` is written: `<storage>/<name>.csv`."""
        return self.locations.path_of(asset.removesuffix("_csv") + ".csv")

    def made_from(self, asset: str) -> dict | None:
        recorded = self.locations.read(f"{self.path(asset)}.json")
        return json.loads(recorded) if recorded is not None else None

    def is_current(self, asset: str, made_from: dict) -> bool:
        return self.made_from(asset) == made_from and self.locations.exists(self.path(asset))

    def write(
        self,
        asset: str,
        rows: DataFrame,
        made_from: dict,
        accept: Callable[[Produced], bool],
        decimals: int | None = None,
    ) -> CsvWrite:
        """`rows` as the asset's CSV (numbers to `decimals`) if `accept` approves what the write produced; the
        previous file stays if not."""
        path = self.path(asset)
        encryption = encryption_params(self.locations.kms_key_id)
        produced, size = write_csv(rows, path, accept, self.guard.check, encryption, decimals)
        if size is None:
            return CsvWrite(path, made_from, False, produced.rows, None, produced)
        self.locations.write(f"{path}.json", json.dumps(made_from, sort_keys=True).encode())
        self.guard.committed(asset)
        return CsvWrite(path, made_from, True, produced.rows, size, produced)

    def read(self, asset: str) -> DataFrame:
        reader = self.pyspark.spark_session.read.option("header", "true").option("escape", '"')
        return reader.option("inferSchema", "true").csv(self.path(asset))
