"""The phone's model: one LiteRT flatbuffer from RGB pixels to class probabilities, and what runs it.

Inside, in order: ImageNet's normalization and MobileNetV2 (the Keras port, the same
weights as the pipeline's), the scaler and PCA folded into one dense layer, and the
logistic regression as a dense layer and a softmax. What the app computes is what the
pipeline's models compute, to float32 precision.

Input: one float32 tensor [n, 224, 224, 3], RGB values 0..255 (the image decoded,
turned upright by its EXIF orientation, flattened onto white, resized to 224x224
bilinear). Outputs: float32 [n, classes], the probabilities in class id order (the
labels' order in `labels.json`), and float32 [n, 1], the known score (minus the
smallest Mahalanobis distance to a class, `vision/openset.py`). The answer is
`unknown` when the largest probability or the known score is below its threshold
in `labels.json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from fruits_assets.vision.mobilenet import INPUT_SIZE, mobilenet_v2_from_torch
from fruits_assets.vision.weights import load_state_dict

MODEL_FILE, LABELS_FILE = "fruits_classifier.tflite", "labels.json"


def reduction_layer_weights(mean: np.ndarray, std: np.ndarray, components: np.ndarray) -> list[np.ndarray]:
    """The scaler then the PCA as one affine map x -> x W + b: ((x - mean) * scale) @ C, scale 0 where std is 0."""
    scale = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 0.0)
    weights = scale[:, None] * components
    return [weights.astype(np.float32), (-(mean * scale) @ components).astype(np.float32)]


def build_phone_model(arrays: dict[str, np.ndarray]):
    """The whole chain in Keras, from `parameters.npz`'s arrays (mean, std, components, coefficients, intercepts,
    and the classes' means and shared precision for the known score)."""
    import keras
    from keras import layers, ops

    base = mobilenet_v2_from_torch(load_state_dict(), include_top=False)
    k, classes = arrays["components"].shape[1], arrays["coefficients"].shape[0]
    reduce = layers.Dense(k, name="scaler_and_pca")
    score = layers.Dense(classes, name="logistic_regression")
    z = reduce(base.output)
    probabilities = layers.Softmax(name="probabilities")(score(z))
    # The Mahalanobis score: minus the smallest squared distance to a class mean, as ‖Lᵀ(z - μ_c)‖² with
    # P = L Lᵀ (no cancellation in float32, unlike zᵀPz - 2zᵀPμ + μᵀPμ).
    cholesky = np.linalg.cholesky(arrays["precision"]).astype(np.float32)
    means = arrays["means"].astype(np.float32)
    differences = ops.expand_dims(z[:, : means.shape[1]], 1) - means[None, :, :]
    distances = ops.sum(ops.square(ops.matmul(differences, cholesky)), axis=-1)
    known = layers.Identity(name="known_score")(-ops.min(distances, axis=-1, keepdims=True))
    model = keras.Model(base.input, [probabilities, known], name="fruits_classifier")
    reduce.set_weights(reduction_layer_weights(arrays["mean"], arrays["std"], arrays["components"]))
    score.set_weights([arrays["coefficients"].T.astype(np.float32), arrays["intercepts"].astype(np.float32)])
    return model


def labels_json(labels: list[str], thresholds: dict[str, float]) -> bytes:
    """What the app needs beside the flatbuffer: the labels in class id order, and where `unknown` begins
    (`thresholds`: `msp` for the largest probability, `mahalanobis` for the known score)."""
    return json.dumps(
        {
            "labels": labels,
            "input": [1, INPUT_SIZE, INPUT_SIZE, 3],
            "outputs": {"probabilities": [1, len(labels)], "known_score": [1, 1]},
            "unknown": {
                "thresholds": {"largest_probability": thresholds["msp"], "known_score": thresholds["mahalanobis"]},
                "rule": "answer unknown when the largest probability < thresholds.largest_probability or "
                "known_score < thresholds.known_score; else the label of the largest probability",
            },
        },
        ensure_ascii=False,
        indent=1,
    ).encode()


@dataclass(frozen=True)
class Answer:
    """What the phone answers for one photo: the classes' probabilities, its known score, and whether either the
    largest probability or the known score is below its threshold (`unknown`)."""

    probabilities: np.ndarray
    known_score: float
    unknown: bool


@dataclass
class PhoneModel:
    """The flatbuffer run by LiteRT, as the app runs it; `answer` gives a photo's probabilities and known score."""

    flatbuffer: bytes
    labels: list[str]
    thresholds: dict[str, float]  # labels.json's: largest_probability, known_score

    def __post_init__(self) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_content=self.flatbuffer, num_threads=1)
        self._input = self._interpreter.get_input_details()[0]["index"]
        # Keras' order, kept in the outputs' names (…:0 the probabilities, …:1 the known score). The probabilities
        # are the trained classes': fewer than the labels when a class has no training photo (never answered).
        outputs = sorted(self._interpreter.get_output_details(), key=lambda d: d["name"])
        if len(outputs) != 2 or tuple(outputs[1]["shape"]) != (1, 1):
            raise ValueError(f"not a fruits_classifier model: outputs {[tuple(d['shape']) for d in outputs]}")
        self._probabilities, self._known = outputs[0]["index"], outputs[1]["index"]
        self._interpreter.allocate_tensors()

    @classmethod
    def from_files(cls, flatbuffer: bytes, labels: bytes) -> PhoneModel:
        described = json.loads(labels)
        return cls(flatbuffer, described["labels"], described["unknown"]["thresholds"])

    def answer(self, pixels: np.ndarray) -> Answer:
        """The answer for one 224x224x3 uint8 RGB image."""
        self._interpreter.set_tensor(self._input, pixels[None].astype(np.float32))
        self._interpreter.invoke()
        probabilities = self._interpreter.get_tensor(self._probabilities)[0].copy()
        known = float(self._interpreter.get_tensor(self._known)[0, 0])
        unknown = (
            float(probabilities.max()) < self.thresholds["largest_probability"]
            or known < self.thresholds["known_score"]
        )
        return Answer(probabilities, known, unknown)

    def classify(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities, [classes] float32, of one 224x224x3 uint8 RGB image."""
        return self.answer(pixels).probabilities

    def top(self, pixels: np.ndarray, n: int = 3) -> list[tuple[str, float]]:
        probabilities = self.classify(pixels)
        best = np.argsort(probabilities)[::-1][:n]
        return [(self.labels[i], float(probabilities[i])) for i in best]
