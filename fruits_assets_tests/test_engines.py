"""Both feature engines compute the same features; the featurizer names undecodable images."""

import numpy as np
import pytest

from fruits_assets.prepare import prepare_litert_model
from fruits_assets.vision.engines import (
    build_engine,
    check_engine,
    engine_payload,
    litert_converter,
    litert_flatbuffer,
    litert_model_path,
)
from fruits_assets.vision.features import FeaturizeTimings, featurize_images
from fruits_assets.vision.reasons import ImageRejected

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


def test_the_litert_model_is_prepared_once_and_read_at_run_time(tmp_path):
    with pytest.raises(FileNotFoundError, match="make setup"):
        litert_flatbuffer(tmp_path)  # not prepared here: a clear error, no conversion at run time
    path = prepare_litert_model(tmp_path)
    assert path == litert_model_path(tmp_path)
    assert sorted(tmp_path.iterdir()) == [path.with_suffix(".json"), path]  # the model and what made it
    assert set(litert_converter(tmp_path)) == {"tensorflow"}
    first = litert_flatbuffer(tmp_path)
    assert first == path.read_bytes() and len(first) > 1_000_000
    assert prepare_litert_model(tmp_path).stat().st_mtime_ns == path.stat().st_mtime_ns  # not converted again


def test_unknown_engine_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown feature engine 'onnx'"):
        check_engine("onnx")
