"""The phone's model: one LiteRT flatbuffer from RGB pixels to class probabilities, and what runs it.

Inside, in order: ImageNet's normalization and MobileNetV2 (the Keras port, the same
weights as the pipeline's), the scaler and PCA as one dense layer, and the logistic
regression as a dense layer and a softmax. What the app computes is what the
pipeline's models compute, to float32 precision.

Converting the graph takes TensorFlow about 15 s; a new classifier of the same
shapes only changes the head's constants. So the flatbuffer records where they lie
(`head_layout.json`), and the next one is the last one with those bytes replaced,
checked on a probe image against the head computed in numpy; under a new base
model, graph code, converter or shape, it is converted anew.

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
import sys
from dataclasses import dataclass
from importlib.metadata import version

import numpy as np

from fruits_assets.vision import engines
from fruits_assets.vision.digest import module_digest
from fruits_assets.vision.engines import convert_to_litert, model_recipe
from fruits_assets.vision.mobilenet import INPUT_SIZE, mobilenet_v2_from_torch
from fruits_assets.vision.weights import load_state_dict

MODEL_FILE, LABELS_FILE, LAYOUT_FILE = "fruits_classifier.tflite", "labels.json", "head_layout.json"
PROBE = np.full((INPUT_SIZE, INPUT_SIZE, 3), 255, dtype=np.uint8)  # a blank page: the patched head's check


def head_constants(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The head's constants, float32, all computed here in float64 so the converter has nothing to fold: what
    differs between two phone models of the same shapes is these bytes alone.

    The scaler and PCA are `x @ reduction + shift` (scale 0 where std is 0); the shift
    is moved into the logistic regression's bias and the class means, where it cancels.
    """
    std, components = arrays["std"], arrays["components"]
    scale = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 0.0)
    shift = -(arrays["mean"] * scale) @ components
    coefficients, means = arrays["coefficients"].T, arrays["means"]
    return {
        "reduction": (scale[:, None] * components).astype(np.float32),
        "score_weights": coefficients.astype(np.float32),
        "score_bias": (shift @ coefficients + arrays["intercepts"]).astype(np.float32),
        "class_means": (means - shift[: means.shape[1]]).astype(np.float32),
        # The Mahalanobis distance as ‖Lᵀd‖² with P = L Lᵀ (no cancellation in float32, unlike dᵀPd expanded).
        "cholesky": np.linalg.cholesky(arrays["precision"]).astype(np.float32),
    }


def head_answers(features: np.ndarray, constants: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """What the head computes from MobileNetV2's features, in numpy: probabilities and known scores."""
    y = features.astype(np.float64) @ constants["reduction"]
    logits = y @ constants["score_weights"] + constants["score_bias"]
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    means = constants["class_means"]
    differences = y[:, None, : means.shape[1]] - means[None]
    distances = np.square(differences @ constants["cholesky"]).sum(axis=-1)
    return exp / exp.sum(axis=1, keepdims=True), -distances.min(axis=1)


def build_phone_model(arrays: dict[str, np.ndarray]):
    """The whole chain in Keras, from `parameters.npz`'s arrays (mean, std, components, coefficients, intercepts,
    and the classes' means and shared precision for the known score)."""
    import keras
    from keras import layers, ops

    constants = head_constants(arrays)
    base = mobilenet_v2_from_torch(load_state_dict(), include_top=False)
    k, classes = constants["reduction"].shape[1], constants["score_weights"].shape[1]
    reduce = layers.Dense(k, use_bias=False, name="scaler_and_pca")
    score = layers.Dense(classes, name="logistic_regression")
    y = reduce(base.output)
    probabilities = layers.Softmax(name="probabilities")(score(y))
    means = constants["class_means"]
    differences = ops.expand_dims(y[:, : means.shape[1]], 1) - means[None, :, :]
    distances = ops.sum(ops.square(ops.matmul(differences, constants["cholesky"])), axis=-1)
    known = layers.Identity(name="known_score")(-ops.min(distances, axis=-1, keepdims=True))
    model = keras.Model(base.input, [probabilities, known], name="fruits_classifier")
    reduce.set_weights([constants["reduction"]])
    score.set_weights([constants["score_weights"], constants["score_bias"]])
    return model


def phone_recipe() -> dict[str, object]:
    """What a converted flatbuffer's bytes depend on beside the head's constants: the base model, this graph's
    code, the conversion's code and the versions of Keras and the converter. A flatbuffer is reused as a
    template only under the same recipe."""
    return {
        **model_recipe(),
        "phone_code": module_digest(sys.modules[__name__]),
        "conversion_code": module_digest(engines),
        "tensorflow": version("tensorflow"),
        "keras": version("keras"),
    }


def head_layout(flatbuffer: bytes, constants: dict[str, np.ndarray], probe: np.ndarray) -> dict | None:
    """Where each head constant lies in a converted flatbuffer, found by its bytes (as is, or transposed as a
    fully connected layer stores its weights), with the recipe and the base's features of a probe image.

    None unless each constant is found exactly once and none overlaps another: then
    the next model is converted, never patched.
    """
    places, taken = {}, []
    for name, value in constants.items():
        found = []
        for transposed in (False, True):
            data = np.ascontiguousarray(value.T if transposed else value).tobytes()
            at = flatbuffer.find(data)
            while at >= 0:
                found.append((at, len(data), transposed))
                at = flatbuffer.find(data, at + 1)
        if value.ndim < 2 or value.shape[0] == 1 or value.shape[-1] == 1:  # its transpose is the same bytes
            found = [f for f in found if not f[2]]
        if len(found) != 1:
            return None
        at, size, transposed = found[0]
        if any(at < end and start < at + size for start, end in taken):
            return None
        taken.append((at, at + size))
        places[name] = {"offset": at, "shape": list(value.shape), "transposed": transposed}
    return {"recipe": phone_recipe(), "constants": places, "probe_features": probe.astype(float).tolist()}


def patched_head(flatbuffer: bytes, layout: dict, constants: dict[str, np.ndarray]) -> bytes | None:
    """`flatbuffer` with its head's constants replaced by `constants`; None when the recipe or a shape differs
    from the layout's (a model converted anew is needed)."""
    places = layout["constants"]
    if layout["recipe"] != phone_recipe() or set(places) != set(constants):
        return None
    if any(list(value.shape) != places[name]["shape"] for name, value in constants.items()):
        return None
    out = bytearray(flatbuffer)
    for name, value in constants.items():
        place = places[name]
        data = np.ascontiguousarray(value.T if place["transposed"] else value).tobytes()
        out[place["offset"] : place["offset"] + len(data)] = data
    return bytes(out)


def phone_flatbuffer(
    arrays: dict[str, np.ndarray], last: bytes | None, layout: dict | None
) -> tuple[bytes, dict | None, bool]:
    """The phone's flatbuffer for `arrays` and its head's layout: the last flatbuffer with its head's constants
    replaced when its layout allows and the result answers the probe as the head's numpy does (no TensorFlow,
    under a second), else converted from Keras (about 15 s).

    Returns the flatbuffer, its layout (None when it cannot be patched next time), and whether it was patched.
    """
    constants = head_constants(arrays)
    if last is not None and layout is not None:
        patched = patched_head(last, layout, constants)
        if patched is not None and _answers_probe(patched, constants, layout):
            return patched, layout, True
    import keras

    model = build_phone_model(arrays)
    base = keras.Model(model.input, model.get_layer("scaler_and_pca").input)
    probe = keras.ops.convert_to_numpy(base(PROBE[None].astype(np.float32)))[0]
    flatbuffer = convert_to_litert(model)
    made = head_layout(flatbuffer, constants, probe)
    return flatbuffer, made if made is not None and layout_holds(flatbuffer, made, constants) else None, False


def layout_holds(flatbuffer: bytes, layout: dict, constants: dict[str, np.ndarray]) -> bool:
    """Whether the layout's places are the bytes the model computes with, not copies it ignores: the file
    answers the probe as `constants` do, and patched with decoys (other values, same shapes) as the decoys do.

    Kept only if so: a head retrained on a few more photos barely moves the answers,
    so the check each patch passes could not tell an ignored copy from the real one.
    """
    decoys = _decoys(constants, np.asarray(layout["probe_features"]))
    patched = patched_head(flatbuffer, layout, decoys)
    return (
        patched is not None
        and _answers_probe(flatbuffer, constants, layout)
        and not _answers_probe(flatbuffer, decoys, layout)
        and _answers_probe(patched, decoys, layout)
    )


def _decoys(constants: dict[str, np.ndarray], features: np.ndarray) -> dict[str, np.ndarray]:
    """Random constants of `constants`' shapes, scaled so that on `features` every output moves with every one
    of them: the reduced values and the logits about N(0, 1), no softmax saturated."""
    rng = np.random.default_rng(0)
    (n, k), classes = constants["reduction"].shape, constants["score_weights"].shape[1]
    rows, m = constants["class_means"].shape
    reduction = rng.normal(size=(n, k)) / max(float(np.linalg.norm(features)), 1e-6)
    y = features @ reduction
    decoys = {
        "reduction": reduction,
        "score_weights": rng.normal(size=(k, classes)) / np.sqrt(k),
        "score_bias": rng.normal(size=classes),
        "class_means": y[:m] + rng.normal(size=(rows, m)),
        "cholesky": np.tril(rng.normal(size=(m, m))) / np.sqrt(m),
    }
    return {name: value.astype(np.float32) for name, value in decoys.items()}


def _answers_probe(flatbuffer: bytes, constants: dict[str, np.ndarray], layout: dict) -> bool:
    answer = PhoneModel(flatbuffer, [], {"largest_probability": 0.0, "known_score": -np.inf}).answer(PROBE)
    probabilities, known = head_answers(np.asarray(layout["probe_features"])[None], constants)
    close = np.allclose(answer.probabilities, probabilities[0], atol=1e-4)
    return close and bool(np.isclose(answer.known_score, known[0], rtol=1e-3, atol=1e-3))


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
