import io

import numpy as np
import pytest
from PIL import Image

from fruits_assets.vision.preprocess import ImageDecodeError, decode_resized

from .conftest import fruit_jpeg


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_decode_resized_is_pil_bilinear_rgb(fmt):
    content = fruit_jpeg((200, 30, 40), fmt=fmt)
    pixels = decode_resized(content)
    assert pixels.shape == (224, 224, 3) and pixels.dtype == np.uint8
    expected = np.asarray(Image.open(io.BytesIO(content)).convert("RGB").resize((224, 224), Image.BILINEAR))
    np.testing.assert_array_equal(pixels, expected)


def test_decode_converts_grayscale_and_alpha_to_rgb():
    for mode in ("L", "RGBA", "P"):
        buffer = io.BytesIO()
        Image.new(mode, (30, 50)).save(buffer, format="PNG")
        assert decode_resized(buffer.getvalue()).shape == (224, 224, 3)


def test_undecodable_bytes_raise_a_decode_error():
    with pytest.raises(ImageDecodeError):
        decode_resized(b"not an image at all")
