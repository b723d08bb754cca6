"""The driver's listing of every file under the images root: path, size, modification time, ETag, or why not.

Not a Spark job: a local root is walked with `os.walk` (through symlinked folders,
as Hadoop's listing goes), an S3 prefix listed page by page. Every entry is a row,
whatever its name or extension; an entry that cannot be examined (a dangling link,
a socket, a folder that cannot be listed) is a row too, with the error, so it ends
in `rejected_images` as `unreadable` instead of disappearing. The listing is held
as columns (Arrow), a few dozen bytes a file, and compared with the stored one by
an Arrow join.

A file's `stamp` names its version: on S3 its size and ETag; on a file system its
size, modification time, inode and change time, so that a copy that keeps the
modification time (`cp -p`, `rsync -t`) is still seen as new bytes.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

import boto3
import pyarrow as pa
import pyarrow.compute as pc

from fruits_assets.vision.paths import bucket_and_prefix, label_and_split, uses_s3

RAW_ARROW_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("size", pa.int64()),
        ("modified", pa.timestamp("us", tz="UTC")),
        ("etag", pa.string()),
        ("stamp", pa.string()),
        ("label", pa.string()),
        ("split", pa.string()),
        ("listing_error", pa.string()),
    ]
)
RAW_SCHEMA = (
    "path string, size long, modified timestamp, etag string, stamp string, label string, split string, "
    "listing_error string"
)
PAGE = 1000  # S3's own page size
BATCH_FILES = 10_000  # entries held as Python values before they become an Arrow batch


class _Columns:
    """The listing's columns, appended to as entries are found: no per-file dictionaries.

    Every `BATCH_FILES` entries the Python values become an Arrow batch: the listing's
    Python objects (about a kilobyte a file) stay bounded, only its Arrow columns
    (a few dozen bytes a file) grow with the files.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self.values: dict[str, list] = {name: [] for name in RAW_ARROW_SCHEMA.names}
        self.batches: list[pa.RecordBatch] = []

    def add(
        self,
        path: str,
        size: int | None,
        mtime_us: int | None,
        etag: str | None,
        version: str | None,
        error: str | None,
    ) -> None:
        # What identifies this version of the file: new bytes mean a new stamp; an entry that cannot be
        # examined is identified by its error, so it is not examined again until the error changes.
        stamp = f"error:{error}" if error else f"{size}:{version}"
        label, split = label_and_split(path, self.root)
        for name, value in zip(
            RAW_ARROW_SCHEMA.names, (path, size, mtime_us, etag, stamp, label, split, error), strict=True
        ):
            self.values[name].append(value)
        if len(self.values["path"]) >= BATCH_FILES:
            self._flush()

    def _flush(self) -> None:
        if self.values["path"]:
            arrays = [pa.array(self.values[f.name], f.type) for f in RAW_ARROW_SCHEMA]
            self.batches.append(pa.RecordBatch.from_arrays(arrays, schema=RAW_ARROW_SCHEMA))
            self.values = {name: [] for name in RAW_ARROW_SCHEMA.names}

    def table(self) -> pa.Table:
        self._flush()
        return pa.Table.from_batches(self.batches, RAW_ARROW_SCHEMA).sort_by("path")


def _error(error: OSError) -> str:
    return f"{type(error).__name__}: {error.strerror or error}"


def _local_entry(columns: _Columns, path: str) -> None:
    hadoop = f"file:{path}"
    try:
        info = os.stat(path)  # through a link, to what the file's bytes are
    except OSError as error:
        columns.add(hadoop, None, None, None, None, _error(error))
        return
    mtime_us = info.st_mtime_ns // 1000
    if not stat.S_ISREG(info.st_mode):
        columns.add(hadoop, None, mtime_us, None, None, "not a regular file (a socket, a FIFO or a device)")
        return
    version = f"{info.st_mtime_ns}:{info.st_ino}:{info.st_ctime_ns}"
    columns.add(hadoop, info.st_size, mtime_us, None, version, None)


def _local_files(columns: _Columns, base: str) -> None:
    """Every entry below a local folder, through symlinked folders as Hadoop's listing goes.

    A symlinked folder is listed under its link's path. A link back to a folder above
    it is an error: following it would list the same files again under ever longer paths.
    """
    if not os.path.isdir(base):
        _local_entry(columns, base)
        return
    above = {base: {os.path.realpath(base)}}

    def unlistable(error: OSError) -> None:
        columns.add(f"file:{error.filename}", None, None, None, None, f"cannot list this folder: {_error(error)}")

    for folder, subfolders, files in os.walk(base, onerror=unlistable, followlinks=True):
        chain = above.pop(folder)
        for sub in subfolders:
            path = os.path.join(folder, sub)
            real = os.path.realpath(path)
            if real in chain:
                raise ValueError(f"{path} links back to {real}, a folder above it: remove the link (a symlink loop)")
            above[path] = chain | {real}
        for name in files:
            _local_entry(columns, os.path.join(folder, name))


def _objects(root: str) -> Iterator[dict]:
    """Every object under an S3 prefix, a page at a time (credentials and endpoint from the standard chain)."""
    bucket, prefix = bucket_and_prefix(root)
    pages = boto3.client("s3").get_paginator("list_objects_v2")
    start = f"{prefix}/" if prefix else ""
    for page in pages.paginate(Bucket=bucket, Prefix=start, PaginationConfig={"PageSize": PAGE}):
        yield from page.get("Contents", [])


def _object_files(columns: _Columns, root: str) -> None:
    scheme = root.split("://", 1)[0]
    bucket, _ = bucket_and_prefix(root)
    for info in _objects(root):
        if info["Key"].endswith("/") and info.get("Size", 0) == 0:
            continue  # a "folder" placeholder some tools create: not a file
        etag = str(info.get("ETag") or "").strip('"') or None
        mtime_us = int(info["LastModified"].timestamp() * 1e6)
        columns.add(f"{scheme}://{bucket}/{info['Key']}", int(info.get("Size") or 0), mtime_us, etag, etag, None)


def path_prefix(root: str) -> str:
    """How every path below `root` begins in the listing (`file:/…/`, or the root's own `s3://…/`): the form a
    sensor's change set uses, and so the only one a partial listing's `paths` can be compared in."""
    return f"{root}/" if uses_s3(root) else f"file:{root.removeprefix('file:')}/"


def list_files(root: str) -> pa.Table:
    """Every file below `root`, one row each, keyed by Hadoop path string (`file:/…`, `s3a://…`), sorted."""
    columns = _Columns(root)
    if uses_s3(root):
        _object_files(columns, root)
    else:
        _local_files(columns, root.removeprefix("file:"))
    return columns.table()


def list_paths(root: str, paths: list[str]) -> pa.Table:
    """Only `paths` (Hadoop path strings under `root`), each examined as a full listing would: those that are not
    there are left out (gone). What a sensor found changed, without listing the whole root."""
    columns = _Columns(root)
    s3 = boto3.client("s3") if uses_s3(root) else None
    for path in sorted(set(paths)):
        if s3 is None:
            local = path.removeprefix("file:")
            if os.path.lexists(local):
                _local_entry(columns, local)
            continue
        bucket, key = path.split("://", 1)[1].split("/", 1)
        try:
            info = s3.head_object(Bucket=bucket, Key=key)
        except s3.exceptions.ClientError as error:
            if error.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                continue
            raise
        etag = str(info.get("ETag") or "").strip('"') or None
        mtime_us = int(info["LastModified"].timestamp() * 1e6)
        columns.add(path, int(info.get("ContentLength") or 0), mtime_us, etag, etag, None)
    return columns.table()


def listing_changes(listing: pa.Table, known: pa.Table | None) -> tuple[pa.Table, pa.Table, int]:
    """The listed rows whose path and stamp were not known (new or changed files), the known paths no longer
    listed, and how many of the listed paths were not known at all (the rows the table gains)."""
    if known is None:
        return listing, pa.table({"path": pa.array([], pa.string())}), listing.num_rows
    known = known.select(["path", "stamp"])
    new = listing.join(known, keys=["path", "stamp"], join_type="left anti").sort_by("path")
    gone = known.select(["path"]).join(listing.select(["path"]), keys="path", join_type="left anti")
    added = new.select(["path"]).join(known.select(["path"]), keys="path", join_type="left anti").num_rows
    return new, gone, added


def unique_paths(listing: pa.Table) -> bool:
    return pc.count_distinct(listing.column("path")).as_py() == listing.num_rows


def root_exists(root: str) -> bool:
    """Whether the images root is there (a folder, a prefix holding objects, or a single file)."""
    if uses_s3(root):
        return next(_objects(root), None) is not None
    return os.path.exists(root.removeprefix("file:"))
