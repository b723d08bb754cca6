"""Feature engines: one small interface, two ways to run MobileNetV2 on CPU.

The driver reads a *payload* once (the model in a form a worker can rebuild from
memory alone) and Spark broadcasts it; each Python worker builds its engine from
the payload once and reuses it for every batch. Workers never read weights from
disk or network.

- `litert` (default): the Keras port converted to a LiteRT flatbuffer, run by
  LiteRT's interpreter with its XNNPACK delegate. `make setup` converts it once
  (`fruits_assets.prepare`) into the environment, named by the weights and model
  code it was made from, with the converter's version beside it: an environment
  that only runs the model (an EMR node) needs LiteRT, not TensorFlow.
- `tensorflow`: the Keras port itself, called as a compiled `tf.function` graph.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Literal, Protocol, get_args

import numpy as np

from fruits_assets.vision import mobilenet
from fruits_assets.vision.digest import module_digest, recipe_digest
from fruits_assets.vision.mobilenet import FEATURE_DIM, INPUT_SIZE, build_mobilenet_v2, mobilenet_v2_from_torch
from fruits_assets.vision.weights import WEIGHTS_SHA256, load_state_dict

EngineName = Literal["litert", "tensorflow"]
ENGINES: tuple[str, ...] = get_args(EngineName)
DEFAULT_ENGINE: EngineName = "litert"
# Beside the packages it was converted from, as the weights are: an environment carries its own model.
MODEL_DIR = Path(sys.prefix) / "share" / "fruits_assets"


def check_engine(name: str) -> str:
    if name not in ENGINES:
        raise ValueError(f"unknown feature engine {name!r}: choose one of {', '.join(ENGINES)}")
    return name


class FeatureEngine(Protocol):
    """Maps an NHWC uint8 batch of 224x224 RGB pixels to its (n, 1280) float32 features."""

    def features(self, batch: np.ndarray) -> np.ndarray: ...


class TensorFlowEngine:
    """The Keras port run as one traced graph with a fixed number of threads."""

    def __init__(self, weights: list[np.ndarray], threads: int):
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
    return mobilenet_v2_from_torch(load_state_dict()).get_weights()


def convert_to_litert(model) -> bytes:
    """A Keras model as a LiteRT flatbuffer (weights frozen in, float32); needs TensorFlow."""
    _require_tensorflow()
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as saved_model:
        model.export(saved_model, format="tf_saved_model", verbose=False)
        return tf.lite.TFLiteConverter.from_saved_model(saved_model).convert()


def model_recipe() -> dict[str, object]:
    """What the model's numbers depend on whatever runs it: its weights and its code."""
    return {"weights_sha256": WEIGHTS_SHA256, "model_code": module_digest(mobilenet)}


def litert_model_path(model_dir: Path = MODEL_DIR) -> Path:
    """Where the converted model lives, named by the digest of the weights and code it was made from."""
    return model_dir / f"mobilenet_v2_features-{recipe_digest(model_recipe())}.tflite"


def litert_flatbuffer(model_dir: Path = MODEL_DIR) -> bytes:
    """The LiteRT model `make setup` converted; a clear error if it was not (or for other weights or code)."""
    path = litert_model_path(model_dir)
    if not path.is_file():
        raise FileNotFoundError(f"no LiteRT model at {path}: run `make setup` (python -m fruits_assets.prepare)")
    return path.read_bytes()


def litert_converter(model_dir: Path = MODEL_DIR) -> dict[str, str]:
    """The versions of what converted the LiteRT model, recorded beside it when it was made."""
    recorded = litert_model_path(model_dir).with_suffix(".json")
    if not recorded.is_file():
        raise FileNotFoundError(f"no record of the LiteRT model's making at {recorded}: run `make setup`")
    return json.loads(recorded.read_text())["converter"]


def _require_tensorflow() -> None:
    if importlib.util.find_spec("tensorflow") is None:
        raise ModuleNotFoundError(
            "the tensorflow engine needs TensorFlow, which this environment does not have "
            "(EMR nodes install only LiteRT): use the litert engine"
        )


def engine_recipe(engine: str) -> dict[str, object]:
    """What makes an engine's numbers: the model's recipe and the versions that convert and run it."""
    if check_engine(engine) == "litert":
        return {
            "engine": engine,
            **model_recipe(),
            "converter": litert_converter(),
            "runtime": _versions("ai-edge-litert"),
        }
    _require_tensorflow()
    return {"engine": engine, **model_recipe(), "runtime": _versions("tensorflow")}


def _versions(*packages: str) -> dict[str, str]:
    return {name: metadata.version(name) for name in packages}


def engine_payload(engine: str):
    """What the driver broadcasts so a worker can build `engine` from memory alone."""
    if check_engine(engine) == "litert":
        return litert_flatbuffer()
    _require_tensorflow()
    return keras_weights()


def build_engine(engine: str, payload, threads: int) -> FeatureEngine:
    """Build an engine on a worker from the broadcast payload."""
    if check_engine(engine) == "litert":
        return LiteRTEngine(payload, threads)
    return TensorFlowEngine(payload, threads)
