"""The driver's listing of the image files under the images root, with their sizes.

Not a Spark job: a local root is walked with `os.walk` (through symlinked folders,
as Hadoop's listing goes), an object store listed with fsspec. Spark then reads
what this listing names (see `reading`).
"""

from __future__ import annotations

import os

import fsspec
from fsspec.implementations.local import LocalFileSystem

from fruits_assets.vision.paths import IMAGE_EXTENSIONS


def _unreadable(error: OSError) -> None:
    raise error  # a folder that cannot be listed fails the run: its images would be missed without a trace


def _local_image_files(base: str) -> dict[str, int]:
    """Image files below a local folder and their sizes, through symlinked folders as Hadoop's listing goes.

    A symlinked folder is listed under its link's path, where Spark reads it. A link
    back to a folder above it is an error: Spark would follow it some forty times
    over and read the same images again under ever longer paths.
    """
    if os.path.isfile(base):
        return {base: os.path.getsize(base)}
    found: dict[str, int] = {}
    above = {base: {os.path.realpath(base)}}
    for folder, subfolders, files in os.walk(base, onerror=_unreadable, followlinks=True):
        chain = above.pop(folder)
        for sub in subfolders:
            path = os.path.join(folder, sub)
            real = os.path.realpath(path)
            if real in chain:
                raise ValueError(f"{path} links back to {real}, a folder above it: remove the link (a symlink loop)")
            above[path] = chain | {real}
        for name in files:
            if name.lower().endswith(IMAGE_EXTENSIONS):  # other files, broken links among them, are not read
                path = os.path.join(folder, name)
                found[path] = os.path.getsize(path)
    return found


def list_image_files(root: str) -> dict[str, int]:
    """Every image file below `root` and its size, keyed by Hadoop path string (`file:/…`, `s3a://…`)."""
    fs, base = fsspec.core.url_to_fs(root)
    if isinstance(fs, LocalFileSystem):
        found = {f"file:{p}": size for p, size in _local_image_files(base).items()}
    else:
        scheme = root.split("://", 1)[0]
        found = {f"{scheme}://{p}": int(info.get("size") or 0) for p, info in fs.find(base, detail=True).items()}
    return {path: size for path, size in found.items() if path.lower().endswith(IMAGE_EXTENSIONS)}


def root_exists(root: str) -> bool:
    """Whether the images root is there (a folder, a prefix holding objects, or a single file)."""
    fs, base = fsspec.core.url_to_fs(root)
    return bool(fs.exists(base))
