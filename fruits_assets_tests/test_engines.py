"""Both feature engines compute the same features; the featurizer names undecodable images."""

import numpy as np
import pytest

from fruits_assets.vision.engines import build_engine, check_engine, engine_payload, litert_flatbuffer
from fruits_assets.vision.features import FeaturizeTimings, featurize_images
from fruits_assets.vision.preprocess import ImageRejected

from .conftest import fruit_jpeg

IMAGES = [fruit_jpeg(c, seed=i) for i, c in enumerate([(220, 40, 40), (240, 200, 30), (90, 160, 60)])]
PATHS = ["a/red.jpg", "b/yellow.jpg", "c/green.jpg"]


@pytest.fixture(scope="module")
def engines():
    return {name: build_engine(name, engine_payload(name), threads=2) for name in ("litert", "tensorflow")}


def test_engines_agree(engines):
    litert = featurize_images(engines["litert"], IMAGES, PATHS, batch_size=2)
    tensorflow = featurize_images(engines["tensorflow"], IMAGES, PATHS, batch_size=3)
    assert litert.shape == (3, 1280) and litert.dtype == np.float32
    np.testing.assert_allclose(litert, tensorflow, atol=1e-4)
    assert np.abs(litert[0] - litert[1]).max() > 0.1  # different images, different features


def test_batching_does_not_change_features(engines):
    timings = FeaturizeTimings()
    one = featurize_images(engines["litert"], IMAGES, PATHS, batch_size=1, timings=timings)
    assert timings.images == 3 and timings.decode_seconds > 0 and timings.model_seconds > 0
    three = featurize_images(engines["litert"], IMAGES, PATHS, batch_size=3)
    np.testing.assert_allclose(one, three, atol=1e-5)
    assert featurize_images(engines["litert"], [], [], batch_size=4).shape == (0, 1280)


def test_undecodable_image_error_names_its_path(engines):
    with pytest.raises(ImageRejected, match="b/broken.jpg"):
        featurize_images(engines["litert"], [IMAGES[0], b"\xff\xd8 junk"], ["a/ok.jpg", "b/broken.jpg"], 8)


def test_litert_model_is_cached_by_weights_hash(tmp_path):
    first = litert_flatbuffer(tmp_path)
    cached = list(tmp_path.glob("mobilenet_v2_features-*.tflite"))
    assert len(cached) == 1 and cached[0].read_bytes() == first
    assert litert_flatbuffer(tmp_path) == first


def test_unknown_engine_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown feature engine 'onnx'"):
        check_engine("onnx")
