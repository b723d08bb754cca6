"""The guard every run passes before its first step, and every commit passes before it writes.

Before the first step: the storage root must belong to this images root (a storage
root reused with another one would keep the old labels and splits), then the root's
lock is taken (`lock.py`). Before every commit (a Delta commit, a model made current,
the CSV or a small file replaced): `check()`, which refuses once the lease is lost.
A run tagged `READ_ONLY_TAG` (the freshness checks' schedule) takes no lock, so it
answers while another run writes; any commit it tries is refused.
"""

import json
import time
from typing import Any

from dagster import ConfigurableResource, InitResourceContext, ResourceDependency, get_dagster_logger
from pydantic import Field, PrivateAttr

from fruits_assets.resources.locations import DataLocations
from fruits_assets.resources.lock import RENEW_SECONDS, STALE_SECONDS, held_elsewhere, take_storage_lock
from fruits_assets.resources.s3 import EncryptedS3Resource

GUARD = "run_guard"
READ_ONLY_TAG = "fruits/read_only"  # "true" on the runs of a job that only reads the storage root
ROOT_RECORD = "fruits-storage.json"


class ImagesRootMismatch(ValueError):
    """The storage root holds the outputs of another images root."""


class ReadOnlyRun(RuntimeError):
    """A run tagged read-only tried to commit: it holds no lock, so it may not write."""


class StorageGuard(ConfigurableResource):
    """The storage root's images root checked and its lock held for the run; `check()` before every commit.

    Inside a step on EMR (`holds_lock=False`) the orchestrating run holds the lock:
    `check()` then asks S3 whether it is still that run's, and fresh.
    """

    locations: ResourceDependency[DataLocations]
    s3: ResourceDependency[EncryptedS3Resource]
    holds_lock: bool = True
    renew_seconds: float = Field(default=RENEW_SECONDS, description="Seconds between renewals of the S3 lock.")
    stale_seconds: float = Field(default=STALE_SECONDS, description="An S3 lock older than this is taken over.")
    pause_after_commit: str | None = Field(
        default=None, description="A recovery drill: stop right after this commit point, to be killed there."
    )
    _lease: Any = PrivateAttr(default=None)
    _read_only: bool = PrivateAttr(default=False)
    _commits: dict = PrivateAttr(default_factory=dict)

    def validate_run(self, context: InitResourceContext) -> None:
        """What a run must satisfy before anything else: nothing here; `RunGuard` checks the run config."""

    def setup_for_execution(self, context: InitResourceContext) -> None:
        if context.run is None:  # a sensor or a schedule reading the tables: it commits nothing, locks nothing
            return
        self.validate_run(context)
        if context.run.tags.get(READ_ONLY_TAG) == "true":  # it reads logs and small files only: no lock to wait on
            self._read_only = True
            return
        run_id = context.run_id or "a run"
        storage = self.locations.storage_root
        if not self.holds_lock:
            self._lease = held_elsewhere(storage, run_id, self.s3.get_client, self.stale_seconds)
            return
        self._lease = take_storage_lock(storage, run_id, self.s3.get_client, self.renew_seconds, self.stale_seconds)
        try:
            self._check_images_root()
        except BaseException:
            self._lease.release()
            self._lease = None
            raise

    def _check_images_root(self) -> None:
        """Refuse a storage root made from another images root; record this one on a root's first run."""
        record_path = self.locations.path_of(ROOT_RECORD)
        recorded = self.locations.read(record_path)
        root = self.locations.images_root
        if recorded is None:
            self.locations.write(record_path, json.dumps({"images_root": root}).encode())
            return
        before = json.loads(recorded)["images_root"]
        if before != root:
            raise ImagesRootMismatch(
                f"storage root {self.locations.storage_root} holds the outputs of images root {before}, not {root} "
                "(FRUITS_IMAGES): labels and splits come from the paths under the root, so the two cannot share "
                "outputs. Use a new FRUITS_STORAGE for this root (or FRUITS_IMAGES=" + before + "); nothing was done"
            )

    def check(self) -> None:
        """Raise `LeaseLost` if this run no longer holds the storage root: called before every commit."""
        if self._read_only:
            raise ReadOnlyRun(f"this run is tagged {READ_ONLY_TAG}: it holds no lock on the storage root, so no commit")
        if self._lease is not None:
            self._lease.check()

    def committed(self, point: str) -> None:
        """Called after each commit a reader sees; in a recovery drill, the run stops here to be killed.

        `pause_after_commit` names a commit point, and optionally which of its commits (`mobilenet_features:3`,
        the third chunk's): the first by default.
        """
        self._commits[point] = self._commits.get(point, 0) + 1
        wanted, _, nth = (self.pause_after_commit or "").partition(":")
        if point == wanted and self._commits[point] == int(nth or 1):
            get_dagster_logger().warning(f"paused after committing {point} (FRUITS_PAUSE_AFTER_COMMIT): kill me now")
            while True:
                time.sleep(3600)

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._lease is not None:
            self._lease.release()
            self._lease = None
