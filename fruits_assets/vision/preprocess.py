"""Image bytes to the pixels torchvision's MobileNetV2 expects, or a reason why not.

The reference's recipe: PIL decode, RGB, 224x224 bilinear; the model itself then
scales to [0, 1] and applies ImageNet's mean and std. Channels stay last (NHWC).

Photos from the public come in every shape, so before that recipe:
- the EXIF orientation is applied, so a phone's portrait photo is featurized upright,
  as every viewer shows it (Fruits-360 images carry none: the reference is unchanged);
- transparency is flattened onto white, the background of every Fruits-360 image;
- 16-bit and 32-bit channels are scaled to 8 bits, CMYK, grayscale and palettes become RGB;
- the format is read from the bytes, whatever the extension says: JPEG, PNG, WebP, GIF
  and TIFF (their first frame), BMP, HEIF/HEIC (pillow-heif) and AVIF (Pillow's own).
The image's size is read from its header and checked against a pixel limit
before any pixel is decoded: decompression bombs never reach memory.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pillow_heif import register_heif_opener

from fruits_assets.vision.formats import cut_short, unsupported_kind
from fruits_assets.vision.mobilenet import INPUT_SIZE
from fruits_assets.vision.reasons import ImageRejected, Reason

Image.init()  # every plugin Pillow has, before HEIF's is added: `open` then knows each accepted format
register_heif_opener()  # HEIF and HEIC, what phones write; Pillow itself opens AVIF
# Formats phones and cameras produce (a multi-picture JPEG opens as JPEG, its first picture). Anything
# else, including formats Pillow would hand to external programs, is not decoded here.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF")
DECODED = "JPEG, PNG, WebP, GIF, BMP, TIFF, HEIF/HEIC or AVIF"
DEFAULT_MAX_PIXELS = 50_000_000  # above a 48-megapixel phone photo, far below a bomb


# The configured `max_pixels`, checked from the header in `_checked_open`, replaces Pillow's
# global limit, so a rejection always names the image's size and the limit that applied.
Image.MAX_IMAGE_PIXELS = None

_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_WHITE = (255, 255, 255, 255)


def _checked_open(content: bytes, max_pixels: int | None) -> Image.Image:
    """Open (header only) and check the size before anything is decoded."""
    if not content:
        raise ImageRejected(Reason.EMPTY, "the file is empty")
    try:
        image = Image.open(io.BytesIO(content), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError as exc:
        if kind := unsupported_kind(content):
            raise ImageRejected(Reason.UNSUPPORTED_FORMAT, f"a {kind}, not a photo ({DECODED})") from exc
        raise ImageRejected(Reason.NOT_AN_IMAGE, f"not a {DECODED} image, nor any known media") from exc
    except MemoryError:
        raise  # no verdict on the bytes: the task fails and is retried
    except Exception as exc:  # noqa: BLE001 - a header the parser chokes on means unusable bytes
        raise ImageRejected(_reason_of(exc, content), f"{type(exc).__name__}: {exc}") from exc
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        image.close()
        raise ImageRejected(Reason.TOO_LARGE, f"{width}x{height} pixels exceeds the limit of {max_pixels}")
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """Upright 8-bit RGB, transparency flattened onto white."""
    image = ImageOps.exif_transpose(image)
    if image.mode in _SIXTEEN_BIT:
        scaled = np.clip(np.asarray(image, dtype=np.float64) / 257.0, 0, 255)
        image = Image.fromarray(np.rint(scaled).astype(np.uint8), "L")
    elif image.mode == "F":
        image = Image.fromarray(np.rint(np.clip(np.asarray(image), 0, 255)).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba).convert("RGB")
    return image.convert("RGB")


def _reason_of(exc: Exception, content: bytes) -> Reason:
    text = str(exc).lower()
    truncated = isinstance(exc, EOFError) or "truncated" in text or cut_short(content)
    return Reason.TRUNCATED if truncated else Reason.CORRUPT


def decoded_rgb(content: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """The image as upright 8-bit RGB at its own size; `ImageRejected` with the reason if it cannot be.

    Pillow's warnings (size, damaged EXIF) are silenced: the outcome is the rejection or the pixels.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _checked_open(content, max_pixels) as image:
            try:
                image.load()
                return _to_rgb(image)
            except MemoryError:
                raise  # no verdict on the bytes: the task fails and is retried
            except Exception as exc:  # noqa: BLE001 - any failure inside a decoder means unusable bytes
                raise ImageRejected(_reason_of(exc, content), f"{type(exc).__name__}: {exc}") from exc


def decode_resized(content: bytes, size: int = INPUT_SIZE, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode image bytes to an RGB uint8 array of shape (size, size, 3); `ImageRejected` if that fails."""
    return np.asarray(decoded_rgb(content, max_pixels).resize((size, size), Image.BILINEAR), dtype=np.uint8)


def rejection_of(content: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageRejected | None:
    """Why these bytes cannot be featurized, or None when they can (fully decoded to know)."""
    try:
        decoded_rgb(content, max_pixels).close()
    except ImageRejected as rejected:
        return rejected
    return None
