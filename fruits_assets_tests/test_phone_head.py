"""The phone's model made by replacing the last one's head constants: the very bytes a conversion gives, and a
conversion whenever the shapes differ or the constants cannot be told apart."""

import numpy as np
import pytest

from fruits_assets.vision.phone import (
    PROBE,
    PhoneModel,
    build_phone_model,
    head_answers,
    head_constants,
    head_layout,
    layout_holds,
    patched_head,
    phone_flatbuffer,
)


def _arrays(seed: int, classes: int = 5, k: int = 20, known_dims: int = 12) -> dict[str, np.ndarray]:
    """A classifier's parameters as `parameters.npz` holds them, random but well formed."""
    rng = np.random.default_rng(seed)
    spread = rng.normal(size=(known_dims, known_dims))
    std = np.abs(rng.normal(size=1280)) + 0.1
    std[::97] = 0.0  # constant features, which the scaler maps to 0
    return {
        "mean": rng.normal(size=1280),
        "std": std,
        "components": np.linalg.qr(rng.normal(size=(1280, k)))[0],
        "coefficients": rng.normal(size=(classes, k)),
        "intercepts": rng.normal(size=classes),
        "means": rng.normal(size=(classes, known_dims)),
        "precision": spread @ spread.T + known_dims * np.eye(known_dims),
    }


@pytest.fixture(scope="module")
def converted():
    flatbuffer, layout, patched = phone_flatbuffer(_arrays(1), None, None)
    assert not patched and layout is not None, "a converted model's head constants were not found in it"
    return flatbuffer, layout


def test_a_new_head_of_the_same_shapes_gives_the_bytes_a_conversion_gives(converted):
    patched, layout, was_patched = phone_flatbuffer(_arrays(2), *converted)
    fresh, _, _ = phone_flatbuffer(_arrays(2), None, None)
    assert was_patched and layout == converted[1]
    assert patched != converted[0], "nothing was replaced"
    assert patched == fresh


def test_the_patched_model_answers_another_photo_as_the_head_computes(converted):
    import keras

    arrays = _arrays(3)
    patched, _, was_patched = phone_flatbuffer(arrays, *converted)
    assert was_patched
    photo = np.random.default_rng(3).integers(0, 256, size=PROBE.shape, dtype=np.uint8)  # not the patch's probe
    model = build_phone_model(arrays)
    base = keras.Model(model.input, model.get_layer("scaler_and_pca").input)
    features = keras.ops.convert_to_numpy(base(photo[None].astype(np.float32)))
    answer = PhoneModel(patched, [], {"largest_probability": 0.0, "known_score": -np.inf}).answer(photo)
    probabilities, known = head_answers(features, head_constants(arrays))
    np.testing.assert_allclose(answer.probabilities, probabilities[0], atol=1e-5)
    np.testing.assert_allclose(answer.known_score, known[0], rtol=1e-4)


def test_a_layout_is_kept_only_where_the_model_reads_its_places(converted):
    flatbuffer, layout = converted
    constants = head_constants(_arrays(1))
    assert layout_holds(flatbuffer, layout, constants)
    # A copy of the bias that the model never reads (after the file's end): the file answers as before, but a
    # layout pointing there would patch nothing, and a retrained head barely moves the probe's answers.
    with_copy = flatbuffer + constants["score_bias"].tobytes()
    places = layout["constants"]
    elsewhere = {**layout, "constants": {**places, "score_bias": {**places["score_bias"], "offset": len(flatbuffer)}}}
    assert layout_holds(with_copy, layout, constants)
    assert not layout_holds(with_copy, elsewhere, constants)


def test_another_shape_is_converted_anew(converted):
    flatbuffer, layout = converted
    wider = head_constants(_arrays(4, classes=6))
    assert patched_head(flatbuffer, layout, wider) is None
    made, made_layout, was_patched = phone_flatbuffer(_arrays(4, classes=6), *converted)
    assert not was_patched and made_layout["constants"]["score_bias"]["shape"] == [6]
    assert PhoneModel(made, [], {"largest_probability": 0.0, "known_score": -np.inf}).classify(PROBE).shape == (6,)


def test_another_recipe_is_converted_anew(converted):
    flatbuffer, layout = converted
    older = {**layout, "recipe": {**layout["recipe"], "tensorflow": "0.0"}}
    assert patched_head(flatbuffer, older, head_constants(_arrays(2))) is None


def test_constants_found_twice_or_not_at_all_give_no_layout():
    constants = {"a": np.arange(8, dtype=np.float32), "b": np.arange(100, 106, dtype=np.float32).reshape(2, 3)}
    probe = np.zeros(1280)
    both = b"head" + constants["a"].tobytes() + constants["b"].T.copy().tobytes()
    layout = head_layout(both, constants, probe)
    assert layout is not None and layout["constants"]["b"]["transposed"]
    assert head_layout(both + constants["a"].tobytes(), constants, probe) is None
    assert head_layout(b"head" + constants["a"].tobytes(), constants, probe) is None
    symmetric = np.eye(3, dtype=np.float32) + 1  # as is or transposed, the same bytes: which way is unknown
    assert head_layout(b"head" + symmetric.tobytes(), {"s": symmetric}, probe) is None
