"""Small files under the storage root, without Spark: written whole and atomically, encrypted on S3.

A pointer like `current.json`, a model's moments, `class_index.json`, the phone's model:
each is written in one piece, through fsspec, so that the CLI and the app team's tools
read them with no JVM. A local file is written beside its name and renamed over it;
an S3 object is one PUT (atomic), with server-side encryption, SSE-KMS when a key is
given. Credentials come from the AWS SDK's default chain.
"""

from __future__ import annotations

import json
import os
import tempfile

import fsspec
from fsspec.implementations.local import LocalFileSystem

CURRENT = "current.json"  # in a versioned folder: names the current version's folder


def encryption_params(kms_key_id: str | None) -> dict[str, str]:
    """S3's request parameters for SSE-S3, or for SSE-KMS with `kms_key_id`: the same choice S3A makes."""
    if kms_key_id:
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id}
    return {"ServerSideEncryption": "AES256"}


def read_bytes(uri: str) -> bytes | None:
    """The file's bytes; None when there is no such file."""
    fs, path = fsspec.core.url_to_fs(uri)
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        return None


def write_bytes(uri: str, data: bytes, kms_key_id: str | None = None) -> None:
    """Replace the file at `uri` with `data`, atomically."""
    fs, path = fsspec.core.url_to_fs(uri)
    if isinstance(fs, LocalFileSystem):
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{os.path.basename(path)}.", delete=False) as file:
            file.write(data)
        os.chmod(file.name, 0o644)
        os.replace(file.name, path)
    else:
        fs.pipe_file(path, data, **encryption_params(kms_key_id))


def exists(uri: str) -> bool:
    fs, path = fsspec.core.url_to_fs(uri)
    fs.invalidate_cache(path)
    return bool(fs.exists(path))


def names(uri: str) -> list[str]:
    """The names directly in the folder (or under the prefix) `uri`; none if there is nothing there."""
    fs, path = fsspec.core.url_to_fs(uri)
    fs.invalidate_cache(path)  # an object store's listing is cached: ask again
    try:
        return sorted(entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(path, detail=False))
    except FileNotFoundError:
        return []


def remove(uri: str) -> None:
    """Delete a file or a folder and everything in it."""
    fs, path = fsspec.core.url_to_fs(uri)
    fs.rm(path, recursive=True)


def current_files(folder: str, files: tuple[str, ...]) -> dict[str, bytes] | None:
    """The named files of the current version of the versioned folder `folder` (its `current.json` names the
    version's folder); None if there is no current version, or it lacks one of them."""
    pointer = read_bytes(f"{folder}/{CURRENT}")
    if pointer is None:
        return None
    version = json.loads(pointer)["folder"]
    found = {file: read_bytes(f"{folder}/{version}/{file}") for file in files}
    return found if all(data is not None for data in found.values()) else None  # type: ignore[return-value]
