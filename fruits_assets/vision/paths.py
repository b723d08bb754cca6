"""Locations and image paths: local paths or URIs, and labels and splits (Fruits-360: <root>/<Split>/<Label>/<file>)."""

from __future__ import annotations

import re
from pathlib import Path

S3_SCHEMES = ("s3://", "s3a://")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def absolute_location(location: str) -> str:
    """A URI as given; a local path made absolute, so Spark and the labels agree on it."""
    if _URI.match(location) or location.startswith("file:"):
        return location.rstrip("/")
    return Path(location).expanduser().resolve().as_posix()


def uses_s3(*locations: str) -> bool:
    return any(location.startswith(S3_SCHEMES) for location in locations)


def bucket_and_prefix(uri: str) -> tuple[str, str]:
    """`s3://bucket/prefix` (or `s3a://`) as (bucket, prefix), the prefix without slashes at its ends."""
    bucket, _, prefix = uri.partition("://")[2].partition("/")
    if not uses_s3(uri) or not bucket:
        raise ValueError(f"expected s3://bucket/prefix, got {uri!r}")
    return bucket, prefix.strip("/")


def path_parts(path: str) -> list[str]:
    """The segments of a local path or of a Hadoop path string such as `file:/…` or `s3a://bucket/…`.

    Hadoop path strings are not percent-encoded, so segments are taken verbatim;
    the scheme is dropped so that `s3://b/k` and `s3a://b/k` name the same place.
    """
    return [p for p in _SCHEME.sub("", path, count=1).split("/") if p]


def is_within(location: str, root: str) -> bool:
    """Whether `location` is `root` or below it (`s3://` and `s3a://` alike), both given as absolute locations."""
    if uses_s3(location) != uses_s3(root):
        return False
    parts, root_parts = path_parts(location), path_parts(root)
    return parts[: len(root_parts)] == root_parts


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
