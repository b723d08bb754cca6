"""IO managers: each owns how one kind of asset is stored under the storage root, and their keys.

Tables are Delta Lake tables (changes merged, or rows replaced, one commit each),
the fitted model a versioned folder, the reduced matrix one CSV file, small Python
values JSON; every write is atomic, on a file system and on S3.
"""

import json
import time
from typing import Any

from dagster import ConfigurableIOManager, InputContext, MetadataValue, OutputContext, ResourceDependency
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, Observation
from pyspark.sql import functions as F

from fruits_assets.resources.locations import DataLocations
from fruits_assets.resources.models import FittedModel, ModelStore
from fruits_assets.resources.spark_resource import SparkResource
from fruits_assets.resources.tables import DeltaTables
from fruits_assets.spark import delta
from fruits_assets.spark.delta import Changes, Replacement
from fruits_assets.spark.files import write_single_csv
from fruits_assets.spark.preview import preview_markdown
from fruits_assets.spark.progress import job_description

DELTA_IO_MANAGER = "delta_io_manager"
MODEL_IO_MANAGER = "spark_ml_io_manager"
CSV_IO_MANAGER = "spark_csv_io_manager"
JSON_IO_MANAGER = "json_io_manager"
FILES_IO_MANAGER = "files_io_manager"


def asset_name(context: OutputContext | InputContext) -> str:
    return "/".join(context.asset_key.path)


def csv_path(locations: DataLocations, asset: str) -> str:
    """Where the CSV IO manager writes asset `<name>_csv`: `<storage>/<name>.csv`."""
    return locations.path_of(asset.removesuffix("_csv") + ".csv")


class DeltaIOManager(ConfigurableIOManager):
    """A table asset as a Delta Lake table at `<storage>/<asset name>/`: one commit per materialization.

    `Changes` are merged by path (what changed, never the rest); a `Replacement`
    replaces every row, unless the table was already made from the same sources.
    Records the version made (readable later by number), the rows, what the commit
    did, and a preview; files older than the retention are vacuumed.
    """

    tables: ResourceDependency[DeltaTables]

    def handle_output(self, context: OutputContext, obj: Changes | Replacement) -> None:
        spark, name = self.tables.pyspark.spark_session, asset_name(context)
        path = self.tables.path(name)
        began = time.perf_counter()
        with job_description(spark, f"{name}: commit to Delta"):
            if isinstance(obj, Changes):
                commit = delta.merge(spark, path, obj)
            elif obj.rows is None or delta.made_from(spark, path) == obj.made_from:
                commit = delta.Commit(version=delta.latest_version(spark, path), unchanged=True)
            else:
                commit = delta.overwrite(spark, path, obj.rows, obj.made_from)
            committed = time.perf_counter()
            changed = commit.version is not None and not commit.unchanged
            if changed:
                delta.vacuum(spark, path, commit.version)
            preview = preview_markdown(delta.read(spark, path)) if changed else "(unchanged)"
        context.add_output_metadata(
            {
                "path": path,
                "delta_version": commit.version if commit.version is not None else -1,
                "rows": self.tables.rows(name),
                "inserted": commit.inserted,
                "updated": commit.updated,
                "deleted": commit.deleted,
                "unchanged": commit.unchanged or commit.version is None,
                "commit_seconds": committed - began,
                "preview": MetadataValue.md(preview),
            }
        )

    def load_input(self, context: InputContext) -> DataFrame:
        name = asset_name(context)
        self.tables.pyspark.spark_session.sparkContext.setJobDescription(f"{context.op_def.name}: reads {name}")
        table = self.tables.read(name)
        if table is None:
            raise FileNotFoundError(f"no table {self.tables.path(name)}: materialize {name} first")
        return table


class SparkCsvIOManager(ConfigurableIOManager):
    """A DataFrame asset `<name>_csv` as one RFC 4180 file `<storage>/<name>.csv`, in the DataFrame's order.

    One file, header first, replaced atomically: what spreadsheets, pandas and the app
    team read without Spark. Beside it, `<name>.csv.json` says which table version it
    was written from; a CSV already written from the same version is not written again.
    """

    locations: ResourceDependency[DataLocations]
    pyspark: ResourceDependency[SparkResource]

    def handle_output(self, context: OutputContext, obj: Replacement) -> None:
        spark, path = self.pyspark.spark_session, csv_path(self.locations, asset_name(context))
        source = self.locations.read(f"{path}.json")
        if obj.rows is None or (source is not None and json.loads(source) == obj.made_from):
            context.add_output_metadata({"path": path, "unchanged": True, **obj.made_from})
            return
        rows = Observation(f"{asset_name(context)} rows")
        with job_description(spark, f"{asset_name(context)}: write CSV"):
            write_single_csv(spark, obj.rows.observe(rows, F.count(F.lit(1)).alias("rows")), path)
            self.locations.write(f"{path}.json", json.dumps(obj.made_from).encode())
        context.add_output_metadata({"path": path, "rows": rows.get["rows"], "unchanged": False, **obj.made_from})

    def load_input(self, context: InputContext) -> DataFrame:
        reader = self.pyspark.spark_session.read.option("header", "true").option("escape", '"')
        return reader.option("inferSchema", "true").csv(csv_path(self.locations, asset_name(context)))


class SparkMLModelIOManager(ConfigurableIOManager):
    """A fitted Spark ML `PipelineModel` (with the moments it was fitted from), versioned by the model store."""

    models: ResourceDependency[ModelStore]

    def handle_output(self, context: OutputContext, obj: FittedModel) -> None:
        name = asset_name(context)
        with job_description(self.models.pyspark.spark_session, f"{name}: write model"):
            folder, new = self.models.save(name, obj)
        context.add_output_metadata({"path": folder, "unchanged": not new})

    def load_input(self, context: InputContext) -> PipelineModel:
        return self.models.load(asset_name(context))


class JsonIOManager(ConfigurableIOManager):
    """A small Python value (plain data) as `<storage>/<asset name>.json`, readable by anyone, never unpickled.

    Written whole: renamed into place on a file system, one PUT on S3, encrypted as
    every other object.
    """

    locations: ResourceDependency[DataLocations]

    def path_for(self, context: OutputContext | InputContext) -> str:
        return self.locations.path_of(asset_name(context) + ".json")

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        path = self.path_for(context)
        self.locations.write(path, json.dumps(obj, ensure_ascii=False, indent=1, sort_keys=True).encode())
        context.add_output_metadata({"path": path})

    def load_input(self, context: InputContext) -> Any:
        data = self.locations.read(self.path_for(context))
        if data is None:
            raise FileNotFoundError(f"no {self.path_for(context)}: materialize {asset_name(context)} first")
        return json.loads(data)


class FilesIOManager(ConfigurableIOManager):
    """An asset that is a few files (`{name: bytes}`), as `<storage>/<asset name>/<name>`, each written whole.

    No Spark: the files are written where the asset runs, encrypted on S3.
    """

    locations: ResourceDependency[DataLocations]

    def handle_output(self, context: OutputContext, obj: dict[str, bytes]) -> None:
        folder = self.locations.path_of(asset_name(context))
        for name, data in obj.items():
            self.locations.write(f"{folder}/{name}", data)
        context.add_output_metadata({"path": folder, "files": MetadataValue.json(sorted(obj))})

    def load_input(self, context: InputContext) -> dict[str, bytes]:
        folder = self.locations.path_of(asset_name(context))
        return {name: self.locations.read(f"{folder}/{name}") for name in self.locations.names(folder)}
