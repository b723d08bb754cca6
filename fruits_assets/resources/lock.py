"""One run at a time per storage root, enforced: a second run fails fast, before any work, naming the first.

On a file system the lock is an advisory `flock` on `<storage>/.fruits-run.lock`:
the kernel releases it when the process holding it ends, however it ends, so a
killed run never blocks the next one. On S3 it is an object created only if absent
(a conditional PUT), renewed every minute by the run holding it; a lock not renewed
for five minutes belongs to a run that died and is taken over. Delta's own commit
protocol would also refuse a conflicting commit; the lock keeps two runs from
doing the work at all.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from fruits_assets.vision.paths import absolute_location, bucket_and_prefix, uses_s3

LOCK_NAME = ".fruits-run.lock"
RENEW_SECONDS = 60.0
STALE_SECONDS = 300.0


class StorageLocked(RuntimeError):
    """Another run is writing this storage root."""


def _owner(run_id: str) -> dict[str, Any]:
    return {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(), "renewed": time.time()}


def _refusal(root: str, owner: dict[str, Any]) -> StorageLocked:
    since = datetime.fromtimestamp(owner.get("renewed", 0), UTC).isoformat(timespec="seconds")
    return StorageLocked(
        f"storage root {root} is being written by run {owner.get('run_id')} (host {owner.get('host')}, "
        f"pid {owner.get('pid')}, alive at {since}): one run at a time per storage root; nothing was done"
    )


@dataclass
class _FileLock:
    root: str
    file: Any

    @classmethod
    def take(cls, root: str, run_id: str) -> _FileLock:
        os.makedirs(root, exist_ok=True)
        file = open(os.path.join(root, LOCK_NAME), "a+")  # noqa: SIM115 - held open for the whole run
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            text = file.read()
            file.close()
            raise _refusal(root, json.loads(text) if text else {}) from None
        file.seek(0)
        file.truncate()
        file.write(json.dumps(_owner(run_id)))
        file.flush()
        return cls(root, file)

    def release(self) -> None:
        self.file.close()  # closing the descriptor releases the flock


@dataclass
class _ObjectLock:
    client: Any
    bucket: str
    key: str
    run_id: str
    etag: str
    stop: threading.Event
    renewer: threading.Thread | None = None

    @classmethod
    def take(cls, client: Any, root: str, run_id: str) -> _ObjectLock:
        bucket, prefix = bucket_and_prefix(root)
        key = f"{prefix}/{LOCK_NAME}".lstrip("/")
        body = json.dumps(_owner(run_id)).encode()
        try:
            etag = client.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")["ETag"]
        except ClientError as error:
            if error.response["Error"]["Code"] not in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise
            held = client.get_object(Bucket=bucket, Key=key)
            owner = json.loads(held["Body"].read() or b"{}")
            if time.time() - owner.get("renewed", 0) < STALE_SECONDS:
                raise _refusal(root, owner) from None
            # The run holding it stopped renewing it long ago: it died. Take it over, if no one else did first.
            etag = client.put_object(Bucket=bucket, Key=key, Body=body, IfMatch=held["ETag"])["ETag"]
        lock = cls(client, bucket, key, run_id, etag, threading.Event())
        lock.renewer = threading.Thread(target=lock._renew, name="storage-lock-renewal", daemon=True)
        lock.renewer.start()
        return lock

    def _renew(self) -> None:
        while not self.stop.wait(RENEW_SECONDS):
            body = json.dumps(_owner(self.run_id)).encode()
            self.etag = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, IfMatch=self.etag)["ETag"]

    def release(self) -> None:
        self.stop.set()
        if self.renewer is not None:
            self.renewer.join()
        with contextlib.suppress(ClientError):
            self.client.delete_object(Bucket=self.bucket, Key=self.key)


def take_storage_lock(storage: str, run_id: str, s3_client: Callable[[], Any]) -> _FileLock | _ObjectLock:
    """The storage root's lock, held until `.release()`; `StorageLocked` naming the holder if another run has it."""
    root = absolute_location(storage)
    if uses_s3(root):
        return _ObjectLock.take(s3_client(), root, run_id)
    return _FileLock.take(root.removeprefix("file:"), run_id)
