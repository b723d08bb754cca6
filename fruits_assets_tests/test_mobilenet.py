"""The Keras port of torchvision's MobileNetV2, checked against first principles on synthetic input."""

import numpy as np
import pytest

from fruits_assets.vision.mobilenet import (
    NORMALIZE_LAYER,
    build_mobilenet_v2,
    keras_weights_from_torch,
    mobilenet_v2_from_torch,
)
from fruits_assets.vision.weights import load_state_dict


@pytest.fixture(scope="module")
def state_dict():
    return load_state_dict()


@pytest.fixture(scope="module")
def classifier(state_dict):
    return mobilenet_v2_from_torch(state_dict, include_top=True)


def test_port_has_torchvisions_parameter_count(classifier):
    assert classifier.count_params() == 3_538_984  # torchvision: 3,504,872 trainable + BN running stats


def _pixels(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(1, 224, 224, 3)).astype(np.float32)


def test_model_applies_the_reference_normalization(classifier):
    """Pixels in [0, 255] become (x / 255 - mean) / std per channel, as torchvision's transforms do."""
    import keras

    pixels = _pixels()
    normalized = keras.Model(classifier.input, classifier.get_layer(NORMALIZE_LAYER).output)(pixels).numpy()
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(normalized, (pixels / 255.0 - mean) / std, atol=1e-5)


def test_stem_pads_symmetrically_with_torch_batchnorm_epsilon(classifier, state_dict):
    """Conv 3x3 stride 2 padding 1, BatchNorm eps 1e-5, ReLU6, computed by hand in numpy."""
    import keras

    pixels = _pixels()
    stem = keras.Model(classifier.input, classifier.get_layer("features_0_2").output)
    got = stem(pixels).numpy()[0]

    x = (pixels / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    w = state_dict["features.0.0.weight"]  # (out, in, kh, kw)
    padded = np.pad(x[0], ((1, 1), (1, 1), (0, 0)))
    patches = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(0, 1))[::2, ::2]  # (112,112,3,3,3)
    conv = np.einsum("hwcij,ocij->hwo", patches, w)
    g, b, m, v = (state_dict[f"features.0.1.{n}"] for n in ("weight", "bias", "running_mean", "running_var"))
    expected = np.clip((conv - m) / np.sqrt(v + 1e-5) * g + b, 0, 6)
    assert got.shape == (112, 112, 32)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_features_model_outputs_the_pooled_1280_vector(state_dict):
    model = mobilenet_v2_from_torch(state_dict, include_top=False)
    out = model(np.zeros((2, 224, 224, 3), np.float32)).numpy()
    assert out.shape == (2, 1280)
    assert (out >= 0).all()  # average of ReLU6 activations


def test_missing_or_unused_weights_are_errors(state_dict):
    model = build_mobilenet_v2(include_top=False)
    partial = {k: v for k, v in state_dict.items() if k != "features.5.conv.1.1.running_var"}
    with pytest.raises(KeyError, match="features.5.conv.1.1.running_var"):
        keras_weights_from_torch(model, partial)
    with pytest.raises(ValueError, match="not loaded"):
        keras_weights_from_torch(model, {**state_dict, "features.99.weight": np.zeros(1)})
