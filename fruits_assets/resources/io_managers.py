"""IO managers: each owns how one kind of asset is stored under the storage root and read back, and their keys.

Tables are Delta Lake tables, committed by their steps through `DeltaTables` (a step
may commit a table chunk by chunk, and judges its blocking checks before each
commit): the IO manager describes what the commit left and loads the table. Fitted
models are versioned folders, the reduced matrix one CSV file (written by its step
through `CsvFiles`), small Python values JSON; every write is atomic, on a file
system and on S3, and made only while the run holds the storage root.
"""

import json
from typing import Any

from dagster import ConfigurableIOManager, InputContext, MetadataValue, OutputContext, ResourceDependency
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame

from fruits_assets.resources.csv_files import CsvFiles, CsvWrite
from fruits_assets.resources.guard import StorageGuard
from fruits_assets.resources.locations import DataLocations
from fruits_assets.resources.models import FittedModel, ModelStore
from fruits_assets.resources.tables import DeltaTables
from fruits_assets.spark.delta import Commit
from fruits_assets.vision.delta_log import preview_markdown

DELTA_IO_MANAGER = "delta_io_manager"
MODEL_IO_MANAGER = "spark_ml_io_manager"
CSV_IO_MANAGER = "csv_io_manager"
JSON_IO_MANAGER = "json_io_manager"


def asset_name(context: OutputContext | InputContext) -> str:
    return "/".join(context.asset_key.path)


class DeltaIOManager(ConfigurableIOManager):
    """A table asset as a Delta Lake table at `<storage>/<asset name>/`, committed by its step.

    Records the version (readable later by number), the rows, what the commits did
    (rows inserted, updated, deleted; files and bytes added and removed, from Delta's
    operation metrics) and a preview, read by delta-rs: describing costs no Spark.
    """

    tables: ResourceDependency[DeltaTables]

    def handle_output(self, context: OutputContext, obj: Commit) -> None:
        name, state = asset_name(context), obj.state
        context.add_output_metadata(
            {
                "path": self.tables.path(name),
                "delta_version": state.version,
                "table_id": state.table_id,
                "rows": state.rows,
                "files": state.files,
                "table_bytes": state.bytes,
                **obj.metrics,
                "unchanged": not obj.committed,
                "preview": MetadataValue.md(
                    preview_markdown(self.tables.path(name), self.tables.locations.delta_options)
                    if obj.committed
                    else "(unchanged)"
                ),
            }
        )

    def load_input(self, context: InputContext) -> DataFrame:
        name = asset_name(context)
        table = self.tables.read(name)
        if table is None:
            raise FileNotFoundError(f"no table {self.tables.path(name)}: materialize {name} first")
        return table


class CsvIOManager(ConfigurableIOManager):
    """A table asset `<name>_csv` as one RFC 4180 file `<storage>/<name>.csv`, written by its step.

    One file, header first, replaced atomically once its check passed: what
    spreadsheets, pandas and the app team read without Spark. Beside it,
    `<name>.csv.json` says what it was written from.
    """

    files: ResourceDependency[CsvFiles]

    def handle_output(self, context: OutputContext, obj: CsvWrite) -> None:
        context.add_output_metadata(
            {"path": obj.path, "rows": obj.rows, "bytes": obj.bytes, "unchanged": not obj.written, **obj.made_from}
        )

    def load_input(self, context: InputContext) -> DataFrame:
        return self.files.read(asset_name(context))


class SparkMLModelIOManager(ConfigurableIOManager):
    """A versioned model (a Spark ML `PipelineModel` and files beside it, or files only), by the model store."""

    models: ResourceDependency[ModelStore]

    def handle_output(self, context: OutputContext, obj: FittedModel) -> None:
        folder, new = self.models.save(asset_name(context), obj)
        context.add_output_metadata(
            {"path": folder, "unchanged": not new, "files": MetadataValue.json(sorted(obj.files))}
        )

    def load_input(self, context: InputContext) -> PipelineModel:
        return self.models.load(asset_name(context))


class JsonIOManager(ConfigurableIOManager):
    """A small Python value (plain data) as `<storage>/<asset name>.json`, readable by anyone, never unpickled.

    Written whole (renamed into place on a file system, one PUT on S3, encrypted as
    every other object), and only when its content changed.
    """

    locations: ResourceDependency[DataLocations]
    guard: ResourceDependency[StorageGuard]

    def path_for(self, context: OutputContext | InputContext) -> str:
        return self.locations.path_of(asset_name(context) + ".json")

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        path = self.path_for(context)
        data = json.dumps(obj, ensure_ascii=False, indent=1, sort_keys=True).encode()
        unchanged = self.locations.read(path) == data
        if not unchanged:
            self.guard.check()
            self.locations.write(path, data)
            self.guard.committed(asset_name(context))
        context.add_output_metadata({"path": path, "unchanged": unchanged})

    def load_input(self, context: InputContext) -> Any:
        data = self.locations.read(self.path_for(context))
        if data is None:
            raise FileNotFoundError(f"no {self.path_for(context)}: materialize {asset_name(context)} first")
        return json.loads(data)
