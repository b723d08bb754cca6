"""Image bytes to the normalized tensor torchvision's MobileNetV2 expects.

Exactly the reference's recipe: PIL decode, RGB, 224x224 bilinear, /255, then
ImageNet mean and std per channel. Channels stay last (NHWC) for Keras.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from fruits_assets.vision.mobilenet import INPUT_SIZE

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


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


def normalize(batch: np.ndarray) -> np.ndarray:
    """uint8 NHWC batch to float32, scaled to [0, 1] then standardized per channel."""
    return (batch.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
