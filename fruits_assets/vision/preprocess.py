"""Image bytes to the pixels torchvision's MobileNetV2 expects.

Exactly the reference's recipe: PIL decode, RGB, 224x224 bilinear. The model
itself then scales to [0, 1] and applies ImageNet's mean and std.
Channels stay last (NHWC) for Keras.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from fruits_assets.vision.mobilenet import INPUT_SIZE


class ImageDecodeError(ValueError):
    """The bytes are not an image PIL can decode."""


def decode_resized(content: bytes, size: int = INPUT_SIZE) -> np.ndarray:
    """Decode image bytes to an RGB uint8 array of shape (size, size, 3)."""
    try:
        with Image.open(io.BytesIO(content)) as image:
            rgb = image.convert("RGB").resize((size, size), Image.BILINEAR)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(str(exc) or type(exc).__name__) from exc
    return np.asarray(rgb, dtype=np.uint8)
