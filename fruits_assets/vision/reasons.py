"""Why a file under the images root is not featurized: one stable list of reasons, each with its meaning.

The reason is a column of `rejected_images`: downstream code and people filter
on it, so a reason's name never changes once released.
"""

from enum import StrEnum


class Reason(StrEnum):
    UNREADABLE = "unreadable"
    EMPTY = "empty"
    UNSUPPORTED_FORMAT = "unsupported_format"
    NOT_AN_IMAGE = "not_an_image"
    TRUNCATED = "truncated"
    CORRUPT = "corrupt"
    TOO_LARGE = "too_large"
    UNLABELED = "unlabeled"


MEANINGS: dict[Reason, str] = {
    Reason.UNREADABLE: "the file could not be read: a dangling link, gone since the listing, permission denied, "
    "an S3 object the credentials may not read (the error is in `message`)",
    Reason.EMPTY: "a file of zero bytes",
    Reason.UNSUPPORTED_FORMAT: "a known kind of file that is not a photo this pipeline decodes (a video, a PDF, "
    "a Photoshop or JPEG 2000 file, an archive…), named in `message`",
    Reason.NOT_AN_IMAGE: "not a JPEG, PNG, WebP, GIF, BMP, TIFF, HEIF/HEIC or AVIF image, nor any known media "
    "(litter such as .DS_Store or a text file)",
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
