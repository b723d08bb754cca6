"""Why a file under the images root is not featurized: one stable list of reasons, each with its meaning.

The reason is a column of `rejected_images`: downstream code and people filter
on it, so a reason's name never changes once released.
"""

from enum import StrEnum


class Reason(StrEnum):
    EMPTY = "empty"
    NOT_AN_IMAGE = "not_an_image"
    TRUNCATED = "truncated"
    CORRUPT = "corrupt"
    TOO_LARGE = "too_large"
    UNLABELED = "unlabeled"


MEANINGS: dict[Reason, str] = {
    Reason.EMPTY: "a file of zero bytes",
    Reason.NOT_AN_IMAGE: "not a JPEG, PNG, WebP, GIF, BMP or TIFF image",
    Reason.TRUNCATED: "the data ends early (an interrupted upload)",
    Reason.CORRUPT: "the decoder fails on damaged data",
    Reason.TOO_LARGE: "more pixels than max_pixels, read from the header before any decoding",
    Reason.UNLABELED: "a file directly under the images root: no folder to name its label",
}


class ImageRejected(ValueError):
    """The file cannot be featurized; `reason` says why, `message` says what exactly."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason, self.message = reason, message
