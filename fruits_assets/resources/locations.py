"""Where the images are read from and where every asset is stored."""

from dagster import ConfigurableResource

from fruits_assets.vision.paths import absolute_location

LOCATIONS = "locations"


class DataLocations(ConfigurableResource):
    """The images root (`FRUITS_IMAGES`) and the storage root (`FRUITS_STORAGE`), as the settings hold them.

    Assets are stored under the storage root by name: `mobilenet_features/`,
    `pca_model/`, `pca_features.csv`, …
    """

    images: str
    storage: str

    @property
    def images_root(self) -> str:
        return absolute_location(self.images)

    @property
    def storage_root(self) -> str:
        return absolute_location(self.storage)

    def path_of(self, name: str) -> str:
        return f"{self.storage_root}/{name}"
