"""One run at a time per storage root: a fenced lease, checked before every commit.

On a file system the lock is an advisory `flock` on `<storage>/.fruits-run.lock`:
the kernel holds it for the process and releases it however the process ends, so it
cannot lapse while the run lives and a killed run never blocks the next one.

On S3 it is an object created only if absent (a conditional PUT) and renewed by
the run holding it (a PUT conditional on the ETag it last wrote), with retries and
backoff. Staleness is judged by S3's own clock: the lock object's `LastModified`
against the `Date` of S3's answer, never one host's clock against another's. A
lock not renewed for `stale_seconds` belongs to a run that died and is taken over.
The holder counts its lease from the start of its last successful renewal, by its
own monotonic clock, and gives it up `LEASE_MARGIN` before anyone may take it over;
a renewal refused because the ETag changed means the lock was taken over. Either
way the lease is lost and every commit path (`check`) refuses to write from then
on. Only the owner releases it: the DELETE is conditional on its ETag.

This is what keeps two writers apart on S3: delta-spark's default S3 log store is
safe for a single driver only, and Delta's commit protocol cannot refuse a second
driver's conflicting commit there. A commit that started before the lease was lost
and lands after it is the window that remains (a run stalled for longer than the
margin between its check and its commit); Delta's multi-cluster log store on
DynamoDB would close it (see docs/storage.md).
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
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from dagster import Failure

from fruits_assets.vision.paths import absolute_location, bucket_and_prefix, uses_s3

LOCK_NAME = ".fruits-run.lock"
RENEW_SECONDS = 60.0
STALE_SECONDS = 300.0
LEASE_MARGIN = 0.2  # of stale_seconds: the holder stops that much before anyone may take over
CONFLICTS = ("PreconditionFailed", "ConditionalRequestConflict")


class StorageLocked(RuntimeError):
    """Another run is writing this storage root."""


class LeaseLost(Failure):
    """This run no longer holds the storage root's lock: it must not commit anything more, and retrying its step
    would not give the lock back (the next run takes it)."""

    def __init__(self, description: str) -> None:
        super().__init__(description=description, allow_retries=False)


def _owner(run_id: str) -> dict[str, Any]:
    return {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(), "taken": time.time()}


def _refusal(root: str, owner: dict[str, Any], since: str) -> StorageLocked:
    return StorageLocked(
        f"storage root {root} is being written by run {owner.get('run_id')} (host {owner.get('host')}, "
        f"pid {owner.get('pid')}, lock renewed {since}): one run at a time per storage root; nothing was done"
    )


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def s3_age_seconds(response: dict[str, Any]) -> float:
    """How long ago, by S3's clock, the object of a GET or HEAD answer was last written."""
    now = parsedate_to_datetime(response["ResponseMetadata"]["HTTPHeaders"]["date"])
    return (now - response["LastModified"]).total_seconds()


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
            raise _refusal(root, json.loads(text) if text else {}, "by a live process") from None
        file.seek(0)
        file.truncate()
        file.write(json.dumps(_owner(run_id)))
        file.flush()
        return cls(root, file)

    def check(self) -> None:
        """The kernel holds an flock for as long as this process lives: it cannot lapse."""

    def release(self) -> None:
        self.file.close()  # closing the descriptor releases the flock


@dataclass
class _ObjectLock:
    client: Any
    root: str
    bucket: str
    key: str
    run_id: str
    etag: str
    renewed: float  # monotonic start of the last successful write of the lock
    renew_seconds: float
    stale_seconds: float
    stop: threading.Event = field(default_factory=threading.Event)
    lost: str | None = None
    last_error: str | None = None
    renewer: threading.Thread | None = None

    @property
    def lease_seconds(self) -> float:
        return self.stale_seconds * (1 - LEASE_MARGIN)

    @classmethod
    def take(cls, client: Any, root: str, run_id: str, renew_seconds: float, stale_seconds: float) -> _ObjectLock:
        bucket, prefix = bucket_and_prefix(root)
        key = f"{prefix}/{LOCK_NAME}".lstrip("/")
        body = json.dumps(_owner(run_id)).encode()
        began = time.monotonic()
        try:
            etag = client.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")["ETag"]
        except ClientError as error:
            if _code(error) not in CONFLICTS:
                raise
            held = client.get_object(Bucket=bucket, Key=key)
            owner = json.loads(held["Body"].read() or b"{}")
            age = s3_age_seconds(held)
            if age < stale_seconds:
                raise _refusal(root, owner, f"{age:.0f} s ago by S3's clock") from None
            # Not renewed for longer than any live run lets pass: its run died. Take it over, unless another did.
            began = time.monotonic()
            try:
                etag = client.put_object(Bucket=bucket, Key=key, Body=body, IfMatch=held["ETag"])["ETag"]
            except ClientError as race:
                if _code(race) not in CONFLICTS:
                    raise
                raise _refusal(root, owner, "just now, by another run taking it over") from None
        lock = cls(client, root, bucket, key, run_id, etag, began, renew_seconds, stale_seconds)
        lock.renewer = threading.Thread(target=lock._renew, name="storage-lock-renewal", daemon=True)
        lock.renewer.start()
        return lock

    def _renew(self) -> None:
        """Renew every `renew_seconds`; retry a failed renewal with backoff until the lease runs out."""
        delay = self.renew_seconds
        while not self.stop.wait(delay):
            began = time.monotonic()
            try:
                body = json.dumps(_owner(self.run_id)).encode()
                self.etag = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, IfMatch=self.etag)[
                    "ETag"
                ]
                self.renewed, delay = began, self.renew_seconds
            except ClientError as error:
                if _code(error) in CONFLICTS or _code(error) in ("NoSuchKey", "404"):
                    self.lost = f"the lock {self.key} was taken over by another run ({_code(error)})"
                    return
                delay = self._backoff(delay, error)
            except BotoCoreError as error:  # a connection reset, a timeout: S3 may answer the next try
                delay = self._backoff(delay, error)
            if time.monotonic() - self.renewed > self.lease_seconds:
                self.lost = f"the lock {self.key} could not be renewed for {self.lease_seconds:.0f} s"
                return

    def _backoff(self, delay: float, error: Exception) -> float:
        self.last_error = f"{type(error).__name__}: {error}"
        return min(max(1.0, delay / 4 if delay == self.renew_seconds else delay * 2), self.renew_seconds)

    def check(self) -> None:
        """Refuse to go on unless the lease still holds: not taken over, renewed within the lease."""
        if self.lost is None and time.monotonic() - self.renewed > self.lease_seconds:
            self.lost = f"the lock {self.key} has not been renewed for {self.lease_seconds:.0f} s"
        if self.lost is not None:
            raise LeaseLost(
                f"run {self.run_id} lost the storage root {self.root}'s lock ({self.lost}): nothing more "
                "is committed; the next run carries on from the last commit"
            )

    def release(self) -> None:
        self.stop.set()
        if self.renewer is not None:
            self.renewer.join()
        if self.lost is None:
            with contextlib.suppress(ClientError, BotoCoreError):  # another run's lock is never deleted
                self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=self.etag)


@dataclass
class _StepLease:
    """Inside a step on EMR: the orchestrating run holds the lock; check it is still this run's, and fresh."""

    client: Any
    root: str
    run_id: str
    stale_seconds: float

    def check(self) -> None:
        bucket, prefix = bucket_and_prefix(self.root)
        key = f"{prefix}/{LOCK_NAME}".lstrip("/")
        try:
            held = self.client.get_object(Bucket=bucket, Key=key)
        except ClientError as error:
            raise LeaseLost(f"run {self.run_id} holds no lock on {self.root} ({_code(error)})") from error
        owner = json.loads(held["Body"].read() or b"{}")
        if owner.get("run_id") != self.run_id or s3_age_seconds(held) > self.stale_seconds * (1 - LEASE_MARGIN):
            raise LeaseLost(f"run {self.run_id} no longer holds {self.root}'s lock (held by {owner.get('run_id')})")

    def release(self) -> None:
        """The orchestrating run releases it."""


class _NoLease:
    """A step whose storage is on a file system the orchestrating process locks itself: nothing to check."""

    def check(self) -> None:
        pass

    def release(self) -> None:
        pass


Lease = Any  # a lease: `check()` before each commit, `release()` once


@dataclass
class _Shared:
    """One lease a process holds for a run, however many resources of that run asked for it."""

    lease: _FileLock | _ObjectLock
    key: tuple[str, str]
    holders: int = 1

    def check(self) -> None:
        self.lease.check()

    def release(self) -> None:
        with _HELD_LOCK:
            self.holders -= 1
            if self.holders:
                return
            del _HELD[self.key]
        self.lease.release()


_HELD: dict[tuple[str, str], _Shared] = {}
_HELD_LOCK = threading.Lock()


def take_storage_lock(
    storage: str,
    run_id: str,
    s3_client: Callable[[], Any],
    renew_seconds: float = RENEW_SECONDS,
    stale_seconds: float = STALE_SECONDS,
) -> Lease:
    """The storage root's lock, held until `.release()`; `StorageLocked` naming the holder if another run has it.

    Within one process, every resource of one run that asks shares the one lease (released with the last).
    """
    root = absolute_location(storage)
    key = (root, run_id)
    with _HELD_LOCK:
        if key in _HELD:
            _HELD[key].holders += 1
            return _HELD[key]
        if uses_s3(root):
            lease: _FileLock | _ObjectLock = _ObjectLock.take(s3_client(), root, run_id, renew_seconds, stale_seconds)
        else:
            lease = _FileLock.take(root.removeprefix("file:"), run_id)
        _HELD[key] = _Shared(lease, key)
        return _HELD[key]


def held_elsewhere(
    storage: str, run_id: str, s3_client: Callable[[], Any], stale_seconds: float = STALE_SECONDS
) -> Lease:
    """The lease of a step whose orchestrating run holds the lock (on a file system, nothing to check)."""
    root = absolute_location(storage)
    if uses_s3(root):
        return _StepLease(s3_client(), root, run_id, stale_seconds)
    return _NoLease()
