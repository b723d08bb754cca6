"""Both feature engines compute the same features; a file goes from its path to features or a reason in one pass."""

import os
import socket

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
from fruits_assets.vision.ingest import IngestTimings, ingest
from fruits_assets.vision.preprocess import DEFAULT_MAX_PIXELS
from fruits_assets.vision.reasons import Reason

from .conftest import fruit_jpeg

COLORS = [(220, 40, 40), (240, 200, 30), (90, 160, 60)]


@pytest.fixture(scope="module")
def engines():
    return {name: build_engine(name, engine_payload(name), threads=2) for name in ("litert", "tensorflow")}


@pytest.fixture
def photos(tmp_path):
    paths = []
    for i, color in enumerate(COLORS):
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(fruit_jpeg(color, seed=i))
        paths.append(str(path))
    return paths


def _features(engine, paths, batch_size, timings=None):
    outcomes = ingest(
        engine, paths, ["fruit"] * len(paths), [None] * len(paths), batch_size, DEFAULT_MAX_PIXELS, timings
    )
    assert all(o.reason is None for o in outcomes)
    return np.stack([o.features for o in outcomes])


def test_engines_agree(engines, photos):
    litert = _features(engines["litert"], photos, batch_size=2)
    tensorflow = _features(engines["tensorflow"], photos, batch_size=3)
    assert litert.shape == (3, 1280) and litert.dtype == np.float32
    np.testing.assert_allclose(litert, tensorflow, atol=1e-4)
    assert np.abs(litert[0] - litert[1]).max() > 0.1  # different images, different features


def test_batching_does_not_change_features(engines, photos):
    timings = IngestTimings()
    one = _features(engines["litert"], photos, batch_size=1, timings=timings)
    assert timings.images == timings.files == 3 and timings.decode_seconds > 0 and timings.model_seconds > 0
    three = _features(engines["litert"], photos, batch_size=3)
    np.testing.assert_allclose(one, three, atol=1e-5)


def test_every_file_gets_an_outcome_whatever_befalls_it(engines, photos, tmp_path):
    """Read once and hashed, decoded once; unreadable, unlabeled, undecodable files rejected with their reason."""
    broken, gone, socket_path = tmp_path / "broken.jpg", tmp_path / "gone.jpg", tmp_path / "a.sock"
    broken.write_bytes(b"\xff\xd8 junk")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(socket_path))
    paths = [photos[0], str(broken), str(gone), photos[1], str(socket_path), photos[2]]
    labels = ["fruit", "fruit", "fruit", None, "fruit", "fruit"]
    errors = [None, None, None, None, None, "PermissionError: denied at listing"]
    outcomes = ingest(engines["litert"], paths, labels, errors, 2, DEFAULT_MAX_PIXELS)
    listener.close()
    reasons = [o.reason for o in outcomes]
    assert reasons == [
        None,
        Reason.NOT_AN_IMAGE,
        Reason.UNREADABLE,
        Reason.UNLABELED,
        Reason.UNREADABLE,
        Reason.UNREADABLE,
    ]
    assert "FileNotFoundError" in outcomes[2].message and "No such device" in outcomes[4].message
    assert outcomes[5].message == "PermissionError: denied at listing"
    assert outcomes[0].content_hash and outcomes[1].content_hash and outcomes[2].content_hash is None
    np.testing.assert_allclose(outcomes[0].features, _features(engines["litert"], photos[:1], 1)[0], atol=1e-6)
    assert os.path.exists(photos[2])  # a file with a listing error is never opened


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
