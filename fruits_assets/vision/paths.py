"""Labels and splits from image paths (Fruits-360 layout: <root>/<Split>/<Label>/<file>)."""

from __future__ import annotations

import re

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
UNLABELED = "unlabeled"  # the rejection reason of an image with no folder to name its label
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def path_parts(path: str) -> list[str]:
    """The segments of a local path or of a Hadoop path string such as `file:/…` or `s3a://bucket/…`.

    Hadoop path strings are not percent-encoded, so segments are taken verbatim;
    the scheme is dropped so that `s3://b/k` and `s3a://b/k` name the same place.
    """
    return [p for p in _SCHEME.sub("", path, count=1).split("/") if p]


def relative_parts(path: str, root: str) -> list[str]:
    """The segments of `path` below `root`; the whole path's segments if it is not below it."""
    parts, root_parts = path_parts(path), path_parts(root)
    if parts[: len(root_parts)] == root_parts:
        return parts[len(root_parts) :]
    return parts


def label_and_split(path: str, root: str) -> tuple[str | None, str | None]:
    """The image's label (its folder's name, verbatim) and split (the folder above, if any).

    `<root>/Test/Apple Golden 1/a.jpg` gives ("Apple Golden 1", "Test");
    `<root>/Apple Golden 1/a.jpg` gives ("Apple Golden 1", None);
    a file directly under the root has no label.
    """
    rel = relative_parts(path, root)
    label = rel[-2] if len(rel) >= 2 else None
    split = rel[-3] if len(rel) >= 3 else None
    return label, split
