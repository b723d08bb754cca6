"""Encoded images to MobileNetV2 features, batch by batch, with no Spark involved."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fruits_assets.vision.engines import FeatureEngine
from fruits_assets.vision.mobilenet import FEATURE_DIM, INPUT_SIZE
from fruits_assets.vision.preprocess import ImageDecodeError, decode_resized


def featurize_images(
    engine: FeatureEngine,
    contents: Sequence[bytes],
    paths: Sequence[str],
    batch_size: int,
) -> np.ndarray:
    """Features of each image, (n, 1280) float32; an undecodable image is an error naming its path."""
    out = np.empty((len(contents), FEATURE_DIM), dtype=np.float32)
    for start in range(0, len(contents), batch_size):
        stop = min(start + batch_size, len(contents))
        pixels = np.empty((stop - start, INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
        for j, i in enumerate(range(start, stop)):
            try:
                pixels[j] = decode_resized(contents[i])
            except ImageDecodeError as exc:
                raise ImageDecodeError(f"cannot decode image {paths[i]}: {exc}") from exc
        out[start:stop] = engine.features(pixels)
    return out
