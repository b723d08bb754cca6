"""MobileNetV2 in Keras that computes exactly what torchvision's computes.

Keras' stock MobileNetV2 pads stride-2 convolutions asymmetrically and uses a
BatchNorm epsilon of 1e-3; torchvision pads one pixel on every side and uses
1e-5. This port builds the torchvision graph layer for layer, names each Keras
layer after its torch module, and loads the torch state dict into it.

The model takes RGB pixel values in [0, 255] and applies the ImageNet
normalization itself (`/255`, then mean and std per channel): the engine fuses
it with the first convolution, far cheaper than doing it in numpy per image.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

INPUT_SIZE = 224
FEATURE_DIM = 1280
NUM_CLASSES = 1000
BN_EPSILON = 1e-5
FEATURES_LAYER = "features_pool"
NORMALIZE_LAYER = "imagenet_normalize"
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

# (expansion t, output channels c, repeats n, first stride s), as in torchvision.
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _layer_name(torch_prefix: str) -> str:
    return torch_prefix.replace(".", "_")


def build_mobilenet_v2(include_top: bool = True):
    """The torchvision MobileNetV2 graph in Keras, NHWC pixels in [0, 255], untrained."""
    import keras
    from keras import layers

    def conv_bn(x, prefix: str, filters: int, kernel: int, stride: int, relu6: bool, depthwise: bool = False):
        if kernel > 1:
            x = layers.ZeroPadding2D(kernel // 2, name=_layer_name(prefix) + "_pad")(x)
        if depthwise:
            x = layers.DepthwiseConv2D(kernel, stride, use_bias=False, name=_layer_name(prefix + ".0"))(x)
        else:
            x = layers.Conv2D(filters, kernel, stride, use_bias=False, name=_layer_name(prefix + ".0"))(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=_layer_name(prefix + ".1"))(x)
        if relu6:
            x = layers.ReLU(6.0, name=_layer_name(prefix + ".2"))(x)
        return x

    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="pixels")
    x = layers.Rescaling(
        scale=1.0 / (255.0 * IMAGENET_STD), offset=-IMAGENET_MEAN / IMAGENET_STD, name=NORMALIZE_LAYER
    )(inputs)
    x = conv_bn(x, "features.0", 32, 3, 2, relu6=True)
    channels, index = 32, 1
    for t, c, n, s in INVERTED_RESIDUAL_SETTING:
        for i in range(n):
            stride = s if i == 0 else 1
            prefix = f"features.{index}.conv"
            block_in, hidden, y, part = x, channels * t, x, 0
            if t != 1:
                y = conv_bn(y, f"{prefix}.{part}", hidden, 1, 1, relu6=True)
                part += 1
            y = conv_bn(y, f"{prefix}.{part}", hidden, 3, stride, relu6=True, depthwise=True)
            y = layers.Conv2D(c, 1, use_bias=False, name=_layer_name(f"{prefix}.{part + 1}"))(y)
            y = layers.BatchNormalization(epsilon=BN_EPSILON, name=_layer_name(f"{prefix}.{part + 2}"))(y)
            if stride == 1 and channels == c:
                y = layers.Add(name=_layer_name(f"features.{index}.add"))([block_in, y])
            x, channels, index = y, c, index + 1
    x = conv_bn(x, f"features.{index}", FEATURE_DIM, 1, 1, relu6=True)
    x = layers.GlobalAveragePooling2D(name=FEATURES_LAYER)(x)
    if include_top:
        x = layers.Dense(NUM_CLASSES, name="classifier_1")(x)
    return keras.Model(inputs, x, name="mobilenet_v2_torchvision")


def keras_weights_from_torch(model, state_dict: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Reorder a torchvision state dict into the model's `get_weights()` order."""
    weights: list[np.ndarray] = []
    used: set[str] = set()

    def take(name: str) -> np.ndarray:
        if name not in state_dict:
            raise KeyError(f"state dict has no {name}")
        used.add(name)
        return np.asarray(state_dict[name], dtype=np.float32)

    for layer in model.layers:
        if not layer.weights:
            continue
        prefix = layer.name.replace("_", ".")
        kind = type(layer).__name__
        if kind == "DepthwiseConv2D":
            weights.append(take(prefix + ".weight").transpose(2, 3, 0, 1))
        elif kind == "Conv2D":
            weights.append(take(prefix + ".weight").transpose(2, 3, 1, 0))
        elif kind == "BatchNormalization":
            used.add(prefix + ".num_batches_tracked")
            weights += [take(prefix + s) for s in (".weight", ".bias", ".running_mean", ".running_var")]
        elif kind == "Dense":
            weights += [take(prefix + ".weight").T, take(prefix + ".bias")]
        else:
            raise TypeError(f"no torch mapping for layer {layer.name} ({kind})")
    unused = sorted(k for k in state_dict if k not in used and not k.startswith("classifier."))
    if unused:
        raise ValueError(f"state dict entries not loaded into the model: {unused[:5]}")
    return weights


def mobilenet_v2_from_torch(state_dict: Mapping[str, np.ndarray], include_top: bool = False):
    """A Keras MobileNetV2 carrying torchvision's ImageNet weights.

    Without the top, the output is the global-average-pooled 1280-vector that
    feeds torchvision's classifier; with it, the 1000 ImageNet logits.
    """
    model = build_mobilenet_v2(include_top=include_top)
    model.set_weights(keras_weights_from_torch(model, state_dict))
    return model
