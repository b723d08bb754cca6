"""Decoding what real photos are, and rejecting what is not one, with its reason."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from fruits_assets.vision.preprocess import decode_resized, decoded_rgb, rejection_of
from fruits_assets.vision.reasons import ImageRejected, Reason

from .conftest import fruit_jpeg


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and header claiming `width`x`height`, with almost no data: a bomb's shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + data + chunk(b"IEND", b"")


def corrupted(content: bytes, at: int) -> bytes:
    return content[:at] + b"\0" * 40 + content[at + 40 :]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_decode_resized_is_pil_bilinear_rgb(fmt):
    content = fruit_jpeg((200, 30, 40), fmt=fmt)
    pixels = decode_resized(content)
    assert pixels.shape == (224, 224, 3) and pixels.dtype == np.uint8
    expected = np.asarray(Image.open(io.BytesIO(content)).convert("RGB").resize((224, 224), Image.BILINEAR))
    np.testing.assert_array_equal(pixels, expected)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "RGB", "I;16"])
def test_every_colour_mode_becomes_the_same_rgb(mode):
    gray = np.full((20, 30), 128, dtype=np.uint8)
    rgb = Image.fromarray(np.stack([gray] * 3, axis=-1))
    if mode == "I;16":
        image = Image.fromarray(gray.astype(np.uint16) * 257)  # 16-bit grey, same level
    elif mode == "CMYK":
        image = rgb.convert("CMYK")
    elif mode == "P":
        image = rgb.convert("P", palette=Image.Palette.ADAPTIVE)
    else:
        image = rgb.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    assert Image.open(io.BytesIO(encode(image, fmt))).mode == mode
    decoded = np.asarray(decoded_rgb(encode(image, fmt)))
    assert decoded.shape == (20, 30, 3)
    assert np.abs(decoded.astype(int) - 128).max() <= 2


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparency_is_flattened_onto_white(mode):
    pixels = np.zeros((10, 10, 4), dtype=np.uint8)  # fully transparent black
    pixels[:5, :, :] = (255, 0, 0, 255)  # an opaque red top half
    image = Image.fromarray(pixels, "RGBA")
    image = image.convert("LA") if mode == "LA" else image.convert("P") if mode == "P" else image
    if mode == "P":
        image.info["transparency"] = image.getpixel((0, 9))
    decoded = np.asarray(decoded_rgb(encode(image, "PNG")))
    assert (decoded[9, 0] == 255).all()  # the transparent half is white, not black
    assert decoded[0, 0].tolist() == ([76, 76, 76] if mode == "LA" else [255, 0, 0])


def test_exif_orientation_is_applied():
    pixels = np.full((10, 40, 3), 255, dtype=np.uint8)
    pixels[:, :5] = (0, 0, 255)  # a blue left edge, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was rotated: viewers turn it 90 degrees clockwise
    content = encode(Image.fromarray(pixels), "JPEG", exif=exif.tobytes(), quality=95)
    upright = np.asarray(decoded_rgb(content))
    assert upright.shape == (40, 10, 3)  # portrait, as every viewer shows it
    assert upright[0, :, 2].mean() > 200 > upright[0, :, 0].mean()  # the blue edge is now on top


def test_the_format_comes_from_the_bytes_not_the_extension(tmp_path):
    """A PNG named .jpg and a JPEG named .png decode as what their bytes are, to the pixels of the right names."""
    png, jpeg = fruit_jpeg((10, 200, 30), fmt="PNG"), fruit_jpeg((10, 200, 30), fmt="JPEG")
    files = {"png.jpg": png, "jpeg.png": jpeg, "png.png": png, "jpeg.jpg": jpeg}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    pixels = {name: decode_resized((tmp_path / name).read_bytes()) for name in files}
    np.testing.assert_array_equal(pixels["png.jpg"], pixels["png.png"])
    np.testing.assert_array_equal(pixels["jpeg.png"], pixels["jpeg.jpg"])
    assert np.abs(pixels["png.png"].astype(int) - pixels["jpeg.jpg"]).max() > 0  # two encodings, told apart


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", Reason.EMPTY),
        (b"not an image at all", Reason.NOT_AN_IMAGE),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", Reason.UNSUPPORTED_FORMAT),  # never Ghostscript
        (fruit_jpeg((1, 2, 3))[:1500], Reason.TRUNCATED),
        (fruit_jpeg((1, 2, 3), fmt="PNG")[:-200], Reason.TRUNCATED),
        (png_header_only(100_000, 100_000), Reason.TOO_LARGE),  # 30 GB of pixels if it were decoded
        (png_header_only(50, 50), Reason.TRUNCATED),  # the pixel data ends early
        (corrupted(fruit_jpeg((1, 2, 3), fmt="PNG"), at=100), Reason.CORRUPT),
    ],
)
def test_what_cannot_be_featurized_is_rejected_with_its_reason(content, reason):
    rejection = rejection_of(content)
    assert rejection is not None and rejection.reason == reason and rejection.message
    with pytest.raises(ImageRejected) as raised:
        decode_resized(content)
    assert raised.value.reason == reason


def test_the_pixel_limit_is_configurable():
    content = fruit_jpeg((1, 2, 3))  # 100x100
    assert rejection_of(content, max_pixels=10_000) is None
    rejection = rejection_of(content, max_pixels=9_999)
    assert rejection is not None and rejection.reason == Reason.TOO_LARGE and "100x100" in rejection.message
