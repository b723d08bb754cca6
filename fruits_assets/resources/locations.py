"""Where the images are read from, where every asset is stored, and how small files there are written."""

from dagster import ConfigurableResource
from pydantic import Field

from fruits_assets.vision import storage
from fruits_assets.vision.delta_log import delta_rs_options
from fruits_assets.vision.paths import absolute_location

LOCATIONS = "locations"


class DataLocations(ConfigurableResource):
    """The images root (`FRUITS_IMAGES`) and the storage root (`FRUITS_STORAGE`), as the settings hold them.

    Assets are stored under the storage root by name: `mobilenet_features/`,
    `pca_model/`, `pca_features.csv`, … Small files there are read and written whole
    (`read`, `write`), encrypted on S3 with `kms_key_id` (SSE-KMS) or SSE-S3.
    """

    images: str
    storage: str
    kms_key_id: str | None = Field(default=None, description="A KMS key for SSE-KMS; SSE-S3 without one.")
    aws_endpoint_url: str | None = Field(default=None, description="An S3-compatible endpoint instead of AWS.")
    aws_region: str = Field(default="eu-west-3", description="The region of the buckets.")

    @property
    def delta_options(self) -> dict[str, str]:
        """delta-rs's storage options for the storage root (its log is read without a JVM)."""
        return delta_rs_options(self.storage_root, self.aws_endpoint_url, self.aws_region)

    @property
    def images_root(self) -> str:
        return absolute_location(self.images)

    @property
    def storage_root(self) -> str:
        return absolute_location(self.storage)

    def path_of(self, name: str) -> str:
        return f"{self.storage_root}/{name}"

    def read(self, path: str) -> bytes | None:
        return storage.read_bytes(path)

    def write(self, path: str, data: bytes) -> None:
        storage.write_bytes(path, data, self.kms_key_id)

    def exists(self, path: str) -> bool:
        return storage.exists(path)

    def names(self, folder: str) -> list[str]:
        return storage.names(folder)

    def remove(self, path: str) -> None:
        storage.remove(path)
