"""Encoded images to MobileNetV2 features, batch by batch, with no Spark involved."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fruits_assets.vision.engines import FeatureEngine
from fruits_assets.vision.mobilenet import FEATURE_DIM, INPUT_SIZE
from fruits_assets.vision.preprocess import decode_resized
from fruits_assets.vision.reasons import ImageRejected


@dataclass
class FeaturizeTimings:
    """Where featurization time goes, so a run can report its stages and throughput."""

    images: int = 0
    decode_seconds: float = 0.0
    model_seconds: float = 0.0


def featurize_images(
    engine: FeatureEngine,
    contents: Sequence[bytes],
    paths: Sequence[str],
    batch_size: int,
    timings: FeaturizeTimings | None = None,
) -> np.ndarray:
    """Features of each image, (n, 1280) float32; an image that does not decode is an error naming its path."""
    timings = timings if timings is not None else FeaturizeTimings()
    out = np.empty((len(contents), FEATURE_DIM), dtype=np.float32)
    for start in range(0, len(contents), batch_size):
        stop = min(start + batch_size, len(contents))
        began = time.perf_counter()
        pixels = np.empty((stop - start, INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
        for j, i in enumerate(range(start, stop)):
            try:
                # Images were screened (pixel limit included) before they reach featurization.
                pixels[j] = decode_resized(contents[i], max_pixels=None)
            except ImageRejected as exc:
                raise ImageRejected(exc.reason, f"cannot decode image {paths[i]}: {exc.message}") from exc
        decoded = time.perf_counter()
        out[start:stop] = engine.features(pixels)
        timings.decode_seconds += decoded - began
        timings.model_seconds += time.perf_counter() - decoded
        timings.images += stop - start
    return out
