"""Where the images are read from and where every asset is stored."""

import re
from pathlib import Path

from dagster import ConfigurableResource

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STORAGE = PROJECT_ROOT / "storage"
S3_SCHEMES = ("s3://", "s3a://")


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


class DataLocations(ConfigurableResource):
    """The images root (`FRUITS_IMAGES`) and the storage root (`FRUITS_STORAGE`).

    Assets are stored under the storage root by name: `mobilenet_features/`,
    `pca_model/`, `pca_features.csv`, …
    """

    images: str
    storage: str = str(DEFAULT_STORAGE)

    @property
    def images_root(self) -> str:
        return absolute_location(self.images)

    @property
    def storage_root(self) -> str:
        return absolute_location(self.storage)

    def path_of(self, name: str) -> str:
        return f"{self.storage_root}/{name}"
