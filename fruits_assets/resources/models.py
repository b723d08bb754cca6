"""Fitted models under the storage root, each version in its own folder, the current one named by one small file.

A Spark ML model is a folder of files; S3 has no folder rename. So each fit is
written to a new folder `<name>/v-<id>/` (the Spark ML model, and plain files beside
it: the moments a PCA was fitted from, a classifier's parameters as arrays), and
only then is `<name>/current.json` replaced: one object, one atomic write on S3 and
on a file system. Readers follow `current.json`, so they see the previous model or
the new one, never half of one; a folder a killed run left is never named and is
removed by the next write, with versions older than the previous.
"""

import json
import uuid
from dataclasses import dataclass, field

from dagster import ConfigurableResource, ResourceDependency
from pydantic import PrivateAttr
from pyspark.ml import PipelineModel

from fruits_assets.resources.locations import DataLocations
from fruits_assets.resources.spark_resource import SparkResource

MODELS = "models"
CURRENT = "current.json"


@dataclass(frozen=True)
class FittedModel:
    """A fitted PipelineModel, what the fit depended on (`fitted_from`), and plain files to keep beside it."""

    model: PipelineModel
    fitted_from: dict
    files: dict[str, bytes] = field(default_factory=dict)


class ModelStore(ConfigurableResource):
    """Versioned model folders under the storage root; a model written in this process is handed on as is.

    Loading a PipelineModel back costs a Spark job per stage's metadata: the steps
    that follow in the same run get the object itself.
    """

    locations: ResourceDependency[DataLocations]
    pyspark: ResourceDependency[SparkResource]
    _written: dict[str, FittedModel] = PrivateAttr(default_factory=dict)

    def _current(self, name: str) -> dict | None:
        data = self.locations.read(f"{self.locations.path_of(name)}/{CURRENT}")
        return json.loads(data) if data is not None else None

    def fitted_from(self, name: str) -> dict | None:
        """What the current version was fitted from, or None before the first fit."""
        current = self._current(name)
        return current.get("fitted_from") if current else None

    def current_folder(self, name: str) -> str | None:
        """The folder of the current version (`v-…`), which names it."""
        current = self._current(name)
        return current["folder"] if current else None

    def file(self, name: str, file: str) -> bytes | None:
        """A plain file kept beside the current model, or None before the first fit."""
        if name in self._written:
            return self._written[name].files.get(file)
        current = self._current(name)
        return self.locations.read(f"{self.locations.path_of(name)}/{current['folder']}/{file}") if current else None

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
        root = self.locations.path_of(name)
        previous = self._current(name)
        self._written[name] = fitted
        if previous is not None and previous.get("fitted_from") == fitted.fitted_from:
            return f"{root}/{previous['folder']}", False
        folder = f"v-{uuid.uuid4().hex[:12]}"
        fitted.model.write().save(f"{root}/{folder}/model")
        for file, data in fitted.files.items():
            self.locations.write(f"{root}/{folder}/{file}", data)
        current = {"folder": folder, "fitted_from": fitted.fitted_from}
        self.locations.write(f"{root}/{CURRENT}", json.dumps(current).encode())
        keep = {folder, CURRENT} | ({previous["folder"]} if previous else set())
        for stale in set(self.locations.names(root)) - keep:
            self.locations.remove(f"{root}/{stale}")
        return f"{root}/{folder}", True
