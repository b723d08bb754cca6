"""Files of every kind a phone, a camera or a desktop leaves in a folder of photos, written for the tests."""

import io

import numpy as np
from PIL import Image
from pillow_heif import register_heif_opener

from fruits_assets.vision.reasons import Reason

from .conftest import fruit_image

register_heif_opener()

PHOTO_FORMATS = {
    "jpg": ("JPEG", {"quality": 92}),
    "png": ("PNG", {}),
    "webp": ("WEBP", {"quality": 90}),
    "gif": ("GIF", {}),
    "bmp": ("BMP", {}),
    "tif": ("TIFF", {}),
    "heic": ("HEIF", {"quality": 90}),
    "avif": ("AVIF", {"quality": 90}),
}


def fruit(color: tuple[int, int, int], seed: int) -> Image.Image:
    return fruit_image(color, seed, size=120)


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def photo(extension: str, color: tuple[int, int, int], seed: int) -> bytes:
    fmt, options = PHOTO_FORMATS[extension]
    return encoded(fruit(color, seed), fmt, **options)


def animated_gif(color: tuple[int, int, int]) -> bytes:
    frames = [fruit(color, 1), fruit((0, 0, 255), 2)]
    return encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def as_png(content: bytes) -> bytes:
    """The image these bytes hold (its first frame), decoded by Pillow itself and saved losslessly."""
    with Image.open(io.BytesIO(content)) as image:
        return encoded(image.convert("RGB"), "PNG")


# What is not a photo, and the reason it is rejected with.
STRAYS: dict[str, tuple[bytes, Reason]] = {
    ".DS_Store": (b"\0\0\0\1Bud1" + b"\0" * 64, Reason.NOT_AN_IMAGE),
    "Thumbs.db": (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 64, Reason.UNSUPPORTED_FORMAT),
    "notes.txt": (b"buy more kiwis\n", Reason.NOT_AN_IMAGE),
    "clip.mp4": (b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom" + b"\0" * 64, Reason.UNSUPPORTED_FORMAT),
    "clip.mov": (b"\0\0\0\x14ftypqt  \0\0\0\0qt  " + b"\0" * 64, Reason.UNSUPPORTED_FORMAT),
    "scan.pdf": (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + b"0" * 64, Reason.UNSUPPORTED_FORMAT),
    "random.heic": (bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8)), Reason.NOT_AN_IMAGE),
    "cut.webp": (None, Reason.TRUNCATED),  # a WebP upload interrupted half-way
    "empty.jpg": (b"", Reason.EMPTY),
}


def stray(name: str) -> bytes:
    content, _ = STRAYS[name]
    if content is None:  # the truncated WebP
        whole = photo("webp", (200, 40, 30), 3)
        return whole[: len(whole) // 2]
    return content
