"""The featurizer's identity: what makes the features, so stored features are never reused by another recipe."""

import inspect

from fruits_assets.vision import preprocess
from fruits_assets.vision.digest import code_digest
from fruits_assets.vision.featurizer import featurizer_id, featurizer_recipe


def test_the_digest_follows_the_code_not_its_layout():
    code = 'def f(x):\n    """Doc."""\n    return x + 1\n'
    assert code_digest(code) == code_digest("def f(x):  # a comment\n    return (x + 1)\n")
    assert code_digest(code) != code_digest("def f(x):\n    return x + 2\n")


def test_changing_the_preprocessing_changes_the_identity():
    recipe = featurizer_recipe("litert")
    source = inspect.getsource(preprocess)
    assert "Image.BILINEAR" in source
    bicubic = {**recipe, "preprocessing_code": code_digest(source.replace("Image.BILINEAR", "Image.BICUBIC"))}
    assert featurizer_id("litert", recipe) == featurizer_id("litert")  # the current recipe is the default
    assert featurizer_id("litert", bicubic) != featurizer_id("litert", recipe)


def test_weights_libraries_and_engine_are_part_of_the_identity():
    recipe = featurizer_recipe("litert")
    assert {"weights_sha256", "model_code", "preprocessing_code", "converter", "runtime", "decoders"} <= set(recipe)
    assert set(recipe["converter"]) == {"tensorflow"} and set(recipe["runtime"]) == {"ai-edge-litert"}
    other_pillow = {**recipe, "decoders": {**recipe["decoders"], "pillow": "0.0"}}
    assert featurizer_id("litert", other_pillow) != featurizer_id("litert", recipe)
    assert featurizer_id("litert") != featurizer_id("tensorflow")
    assert featurizer_id("litert").startswith("litert/")
