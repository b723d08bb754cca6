"""Fitted models under the storage root, each version in its own folder, the current one named by one small file.

A Spark ML model is a folder of files; S3 has no folder rename. So each version is
written to a folder of its own, `<name>/v-<digest>/` (the Spark ML model, if any,
and plain files beside it: the moments a PCA was fitted from, a classifier's
parameters as arrays, the phone's flatbuffer), and only then is
`<name>/current.json` replaced: one object, one atomic write on S3 and on a file
system. Readers follow `current.json`, so they see the previous version or the new
one, never half of one. The folder is named by a digest of what the version was
made from, so the same inputs always make the same folder: a folder a killed run
left half-written is written again whole by the next, and versions older than the
previous one are removed.
"""

import json
import weakref
from dataclasses import dataclass, field
from typing import NamedTuple

from dagster import ConfigurableResource, ResourceDependency
from pyspark.ml import PipelineModel

from fruits_assets.resources.guard import StorageGuard
from fruits_assets.resources.locations import DataLocations
from fruits_assets.resources.spark_resource import SparkResource
from fruits_assets.vision.digest import recipe_digest
from fruits_assets.vision.storage import CURRENT

MODELS = "models"


def version_folder(made_from: dict) -> str:
    """The folder of the version made from `made_from`: the same inputs, the same folder."""
    return f"v-{recipe_digest(made_from)[:12]}"


@dataclass(frozen=True)
class FittedModel:
    """A version of a model: the Spark ML PipelineModel (None for one made of files only), what it was made from,
    and plain files kept beside it."""

    model: PipelineModel | None
    made_from: dict
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def folder(self) -> str:
        return version_folder(self.made_from)


class _Written(NamedTuple):
    """A version this process wrote and made current: its folder's path, the Spark session its PipelineModel lives
    in (weakly: a stopped session is not kept alive for it; None without one), and the version itself."""

    path: str
    session: weakref.ref | None
    version: FittedModel


_WRITTEN: dict[str, _Written] = {}  # by model name: the last version of each this process wrote


class ModelStore(ConfigurableResource):
    """Versioned model folders under the storage root; a version written in this process is handed on as is.

    Loading a PipelineModel back costs a Spark job per stage's metadata: the steps
    that follow in the same run, on the same Spark session, get the object itself.
    Each step has its own instances of the resources, so what was written is kept by
    the module (`_WRITTEN`), the last version of each model only, with its folder: the
    same folder always holds the same version.
    """

    locations: ResourceDependency[DataLocations]
    pyspark: ResourceDependency[SparkResource]
    guard: ResourceDependency[StorageGuard]

    def _current(self, name: str) -> dict | None:
        data = self.locations.read(f"{self.locations.path_of(name)}/{CURRENT}")
        return json.loads(data) if data is not None else None

    def made_from(self, name: str) -> dict | None:
        """What the current version was made from, or None before the first."""
        current = self._current(name)
        return current.get("made_from") if current else None

    def current_folder(self, name: str) -> str | None:
        """The folder of the current version (`v-…`), which names it."""
        current = self._current(name)
        return current["folder"] if current else None

    @staticmethod
    def _written(name: str, path: str) -> _Written | None:
        written = _WRITTEN.get(name)
        return written if written is not None and written.path == path else None

    def _version_path(self, name: str, folder: str | None) -> str | None:
        folder = folder or self.current_folder(name)
        return f"{self.locations.path_of(name)}/{folder}" if folder else None

    def file(self, name: str, file: str, folder: str | None = None) -> bytes | None:
        """A plain file of the current version (or of the version in `folder`); None if there is none."""
        path = self._version_path(name, folder)
        if path is None:
            return None
        written = self._written(name, path)
        return written.version.files.get(file) if written is not None else self.locations.read(f"{path}/{file}")

    def load(self, name: str, folder: str | None = None) -> PipelineModel:
        """The Spark ML model of the current version (or of the version in `folder`)."""
        path = self._version_path(name, folder)
        if path is None:
            raise FileNotFoundError(f"no {name} under {self.locations.storage_root}: materialize it first")
        written = self._written(name, path)
        if written is not None and written.session is not None and written.session() is self.pyspark.spark_session:
            return written.version.model
        return PipelineModel.load(f"{path}/model")

    def save(self, name: str, fitted: FittedModel) -> tuple[str, bool]:
        """Write a new version and make it current, unless the current one was made from the same inputs.

        Returns the current version's folder, and whether it is a new one.
        """
        root = self.locations.path_of(name)
        previous = self._current(name)
        if previous is not None and previous.get("made_from") == fitted.made_from:
            return f"{root}/{previous['folder']}", False
        folder = fitted.folder
        self.guard.check()
        if fitted.model is not None:
            fitted.model.write().overwrite().save(f"{root}/{folder}/model")
        for file, data in fitted.files.items():
            self.locations.write(f"{root}/{folder}/{file}", data)
        self.guard.check()
        current = {"folder": folder, "made_from": fitted.made_from}
        self.locations.write(f"{root}/{CURRENT}", json.dumps(current, sort_keys=True).encode())
        session = weakref.ref(self.pyspark.spark_session) if fitted.model is not None else None
        _WRITTEN[name] = _Written(f"{root}/{folder}", session, fitted)  # only once whole and current
        self.guard.committed(name)
        keep = {folder, CURRENT} | ({previous["folder"]} if previous else set())
        for stale in set(self.locations.names(root)) - keep:
            self.locations.remove(f"{root}/{stale}")
        return f"{root}/{folder}", True
