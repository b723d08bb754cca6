"""Fitted models under the storage root, each version in its own folder, the current one named by one small file.

A Spark ML model is a folder of files; S3 has no folder rename. So each fit is
written to a new folder `<name>/v-<id>/` (the model, and the moments it was fitted
from), and only then is `<name>/current.json` replaced: one object, one atomic
write on S3 and on a file system. Readers follow `current.json`, so they see the
previous model or the new one, never half of one; the folder a killed run left is
never named and is removed by the next write, with versions older than the previous.
"""

import json
import uuid
from dataclasses import dataclass

from dagster import ConfigurableResource, ResourceDependency
from pydantic import PrivateAttr
from pyspark.ml import PipelineModel

from fruits_assets.resources.locations import DataLocations
from fruits_assets.resources.spark_resource import SparkResource
from fruits_assets.spark.files import delete, list_names, read_bytes, write_bytes
from fruits_assets.spark.moments import Moments

MODELS = "models"
CURRENT = "current.json"


@dataclass(frozen=True)
class FittedModel:
    """A fitted PipelineModel, the moments it was fitted from, and what the fit depended on (`fitted_from`)."""

    model: PipelineModel
    moments: Moments
    fitted_from: dict


class ModelStore(ConfigurableResource):
    """Versioned model folders under the storage root; a model written in this process is handed on as is.

    Loading a PipelineModel back costs a Spark job per stage's metadata: the steps
    that follow in the same run get the object itself.
    """

    locations: ResourceDependency[DataLocations]
    pyspark: ResourceDependency[SparkResource]
    _written: dict[str, FittedModel] = PrivateAttr(default_factory=dict)

    def _current(self, name: str) -> dict | None:
        data = read_bytes(self.pyspark.spark_session, f"{self.locations.path_of(name)}/{CURRENT}")
        return json.loads(data) if data is not None else None

    def current_folder(self, name: str) -> str | None:
        """The folder of the current version (`v-…`), which names it."""
        current = self._current(name)
        return current["folder"] if current else None

    def moments(self, name: str) -> Moments | None:
        """The moments the current model was fitted from, or None before the first fit."""
        if name in self._written:
            return self._written[name].moments
        current = self._current(name)
        if current is None:
            return None
        data = read_bytes(self.pyspark.spark_session, f"{self.locations.path_of(name)}/{current['folder']}/moments.npz")
        return Moments.from_bytes(data) if data is not None else None

    def load(self, name: str) -> PipelineModel:
        if name in self._written:
            return self._written[name].model
        current = self._current(name)
        if current is None:
            raise FileNotFoundError(f"no {name} under {self.locations.storage_root}: materialize it first")
        return PipelineModel.load(f"{self.locations.path_of(name)}/{current['folder']}/model")

    def save(self, name: str, fitted: FittedModel) -> tuple[str, bool]:
        """Write a new version and make it current, unless the current one was fitted from the same inputs.

        Returns the current version's folder, and whether it is a new one.
        """
        spark, root = self.pyspark.spark_session, self.locations.path_of(name)
        previous = self._current(name)
        self._written[name] = fitted
        if previous is not None and previous.get("fitted_from") == fitted.fitted_from:
            return f"{root}/{previous['folder']}", False
        folder = f"v-{uuid.uuid4().hex[:12]}"
        fitted.model.write().save(f"{root}/{folder}/model")
        write_bytes(spark, f"{root}/{folder}/moments.npz", fitted.moments.to_bytes())
        current = {"folder": folder, "fitted_from": fitted.fitted_from}
        write_bytes(spark, f"{root}/{CURRENT}", json.dumps(current).encode())
        keep = {folder, CURRENT} | ({previous["folder"]} if previous else set())
        for stale in set(list_names(spark, root)) - keep:
            delete(spark, f"{root}/{stale}")
        return f"{root}/{folder}", True
