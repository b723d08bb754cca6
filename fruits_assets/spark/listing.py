"""The driver's listing of every file under the images root: path, size, modification time, ETag, or why not.

Not a Spark job: a local root is walked with `os.walk` (through symlinked folders,
as Hadoop's listing goes), an object store listed with fsspec. Every entry is a row,
whatever its name or extension; an entry that cannot be examined (a dangling link,
a socket, a folder that cannot be listed) is a row too, with the error, so it ends
in `rejected_images` as `unreadable` instead of disappearing.
"""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime

import fsspec
import pandas as pd
from fsspec.implementations.local import LocalFileSystem

from fruits_assets.vision.paths import label_and_split

COLUMNS = ("path", "size", "modified", "etag", "stamp", "label", "split", "listing_error")
RAW_SCHEMA = (
    "path string, size long, modified timestamp, etag string, stamp string, label string, split string, "
    "listing_error string"
)


def _error(error: OSError) -> str:
    return f"{type(error).__name__}: {error.strerror or error}"


def _row(path: str, size: int | None, mtime_ns: int | None, etag: str | None, error: str | None) -> dict:
    modified = datetime.fromtimestamp(mtime_ns / 1e9, UTC) if mtime_ns is not None else None
    # What identifies this version of the file: a new size, time or ETag means new bytes to read; an entry
    # that cannot be examined is identified by its error, so it is not examined again until that changes.
    stamp = f"error:{error}" if error else f"{size}:{etag}" if etag else f"{size}:{mtime_ns}"
    return {"path": path, "size": size, "modified": modified, "etag": etag, "stamp": stamp, "listing_error": error}


def _local_entry(path: str) -> dict:
    try:
        info = os.stat(path)  # through a link, to what the file's bytes are
    except OSError as error:
        return _row(path, None, None, None, _error(error))
    if not stat.S_ISREG(info.st_mode):
        return _row(path, None, info.st_mtime_ns, None, "not a regular file (a socket, a FIFO or a device)")
    return _row(path, info.st_size, info.st_mtime_ns, None, None)


def _local_files(base: str) -> list[dict]:
    """Every entry below a local folder, through symlinked folders as Hadoop's listing goes.

    A symlinked folder is listed under its link's path. A link back to a folder above
    it is an error: following it would list the same files again under ever longer paths.
    """
    if not os.path.isdir(base):
        return [_local_entry(base)]
    rows: list[dict] = []
    above = {base: {os.path.realpath(base)}}

    def unlistable(error: OSError) -> None:
        rows.append(_row(error.filename, None, None, None, f"cannot list this folder: {_error(error)}"))

    for folder, subfolders, files in os.walk(base, onerror=unlistable, followlinks=True):
        chain = above.pop(folder)
        for sub in subfolders:
            path = os.path.join(folder, sub)
            real = os.path.realpath(path)
            if real in chain:
                raise ValueError(f"{path} links back to {real}, a folder above it: remove the link (a symlink loop)")
            above[path] = chain | {real}
        rows += [_local_entry(os.path.join(folder, name)) for name in files]
    return rows


def _object_files(fs, base: str, scheme: str) -> list[dict]:
    rows = []
    for key, info in fs.find(base, detail=True).items():
        modified = info.get("LastModified")
        mtime_ns = int(modified.timestamp() * 1e9) if modified is not None else None
        etag = str(info.get("ETag") or "").strip('"') or None
        rows.append(_row(f"{scheme}://{key}", int(info.get("size") or 0), mtime_ns, etag, None))
    return rows


def list_files(root: str) -> pd.DataFrame:
    """Every file below `root`, one row each, keyed by Hadoop path string (`file:/…`, `s3a://…`), sorted."""
    fs, base = fsspec.core.url_to_fs(root)
    if isinstance(fs, LocalFileSystem):
        rows = [{**r, "path": f"file:{r['path']}"} for r in _local_files(base)]
    else:
        rows = _object_files(fs, base, root.split("://", 1)[0])
    listing = pd.DataFrame(rows, columns=[c for c in COLUMNS if c not in ("label", "split")])
    labels = [label_and_split(path, root) for path in listing["path"]]
    listing["label"] = [label for label, _ in labels]
    listing["split"] = [split for _, split in labels]
    listing["size"] = listing["size"].astype("Int64")
    return listing[list(COLUMNS)].sort_values("path", ignore_index=True)


def listing_changes(listing: pd.DataFrame, known: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The listed rows whose path and stamp were not known (new or changed files), and the known paths not listed."""
    seen = listing.merge(known[["path", "stamp"]], on=["path", "stamp"], how="left", indicator=True)
    new = listing[(seen["_merge"] == "left_only").to_numpy()]
    gone = known[~known["path"].isin(listing["path"])]
    return new.reset_index(drop=True), gone.reset_index(drop=True)


def root_exists(root: str) -> bool:
    """Whether the images root is there (a folder, a prefix holding objects, or a single file)."""
    fs, base = fsspec.core.url_to_fs(root)
    return bool(fs.exists(base))
