"""Feature engines: one small interface, two ways to run MobileNetV2 on CPU.

The driver prepares a *payload* once (the model in a form a worker can rebuild
from memory alone) and Spark broadcasts it; each Python worker builds its engine
from the payload once and reuses it for every batch. Workers never read weights
from disk or network.

- `litert` (default): the Keras port converted to a LiteRT flatbuffer, run by
  LiteRT's interpreter with its XNNPACK delegate. The conversion runs at first
  use and is cached on disk by the checkpoint's hash.
- `tensorflow`: the Keras port itself, called as a compiled `tf.function` graph.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Protocol

import numpy as np

from fruits_assets.vision.mobilenet import (
    FEATURE_DIM,
    INPUT_SIZE,
    PORT_REVISION,
    build_mobilenet_v2,
    mobilenet_v2_from_torch,
)
from fruits_assets.vision.weights import WEIGHTS_SHA256, load_state_dict

ENGINES = ("litert", "tensorflow")
DEFAULT_ENGINE = "litert"


class FeatureEngine(Protocol):
    """Maps an NHWC uint8 batch of 224x224 RGB pixels to its (n, 1280) float32 features."""

    def features(self, batch: np.ndarray) -> np.ndarray: ...


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def check_engine(name: str) -> str:
    if name not in ENGINES:
        raise ValueError(f"unknown feature engine {name!r}: choose one of {', '.join(ENGINES)}")
    return name


class TensorFlowEngine:
    """The Keras port run as one traced graph with a fixed number of threads."""

    def __init__(self, weights: list[np.ndarray], threads: int):
        _quiet_tensorflow()
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass  # TensorFlow already initialized in this process: its threads are set.
        model = build_mobilenet_v2(include_top=False)
        model.set_weights(weights)
        self._call = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec([None, INPUT_SIZE, INPUT_SIZE, 3], tf.float32)],
        )

    def features(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) == 0:
            return np.empty((0, FEATURE_DIM), dtype=np.float32)
        return self._call(batch.astype(np.float32)).numpy()


class LiteRTEngine:
    """A LiteRT flatbuffer run by the interpreter with XNNPACK on `threads` threads."""

    def __init__(self, flatbuffer: bytes, threads: int):
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_content=flatbuffer, num_threads=threads)
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._batch = 0

    def features(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) != self._batch:
            self._interpreter.resize_tensor_input(self._input, list(batch.shape))
            self._interpreter.allocate_tensors()
            self._batch = len(batch)
        if self._batch == 0:
            return np.empty((0, FEATURE_DIM), dtype=np.float32)
        self._interpreter.set_tensor(self._input, batch.astype(np.float32))
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output).copy()


def keras_weights() -> list[np.ndarray]:
    """The port's weights in `get_weights()` order, from the verified checkpoint."""
    _quiet_tensorflow()
    return mobilenet_v2_from_torch(load_state_dict()).get_weights()


def convert_to_litert(model) -> bytes:
    """Convert a Keras model to a LiteRT flatbuffer (weights frozen in, float32)."""
    _quiet_tensorflow()
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as saved_model:
        model.export(saved_model, format="tf_saved_model", verbose=False)
        return tf.lite.TFLiteConverter.from_saved_model(saved_model).convert()


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fruits_assets"


def litert_cache_key() -> str:
    """Names what the flatbuffer is made of: the weights, the port's revision, the converter's version."""
    made_of = f"{WEIGHTS_SHA256}:{PORT_REVISION}:tensorflow=={metadata.version('tensorflow')}"
    return hashlib.sha256(made_of.encode()).hexdigest()[:16]


def featurizer_id(engine: str) -> str:
    """Names what computes the features: stored features are reused only by the same featurizer."""
    return f"{check_engine(engine)}/{litert_cache_key()}"


def litert_flatbuffer(cache_dir: Path | None = None) -> bytes:
    """The LiteRT model, converted from the Keras port at first use, cached by the weights' hash."""
    path = (cache_dir or default_cache_dir()) / f"mobilenet_v2_features-{litert_cache_key()}.tflite"
    if path.is_file():
        return path.read_bytes()
    flatbuffer = convert_to_litert(mobilenet_v2_from_torch(load_state_dict()))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(flatbuffer)
    tmp.replace(path)
    return flatbuffer


def engine_payload(engine: str):
    """What the driver broadcasts so a worker can build `engine` from memory alone."""
    if check_engine(engine) == "litert":
        return litert_flatbuffer()
    return keras_weights()


def build_engine(engine: str, payload, threads: int) -> FeatureEngine:
    """Build an engine on a worker from the broadcast payload."""
    if check_engine(engine) == "litert":
        return LiteRTEngine(payload, threads)
    return TensorFlowEngine(payload, threads)


if __name__ == "__main__":
    # `make setup` warms the cache, so the first run does not pay for the conversion.
    print(f"LiteRT model ready: {len(litert_flatbuffer())} bytes in {default_cache_dir()}")
