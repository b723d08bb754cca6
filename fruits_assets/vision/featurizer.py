"""What makes the features, named: stored features are reused only by the featurizer that computed them.

The identity is a digest of the featurizer's recipe: the engine's (the checkpoint's
SHA-256, the model's code, the versions of what converted and runs it), the
preprocessing code and the decoders' versions. Code is digested from its syntax
tree without docstrings, so reformatting or a comment keeps the features, while
any change to what the code does (a resize, a mean, a layer) makes every image new.
"""

from __future__ import annotations

from importlib import metadata

from fruits_assets.vision import preprocess
from fruits_assets.vision.digest import module_digest, recipe_digest
from fruits_assets.vision.engines import check_engine, engine_recipe

DECODER_PACKAGES = ("pillow",)  # the library whose decoding and resizing the pixels come from


def featurizer_recipe(engine: str) -> dict[str, object]:
    """Everything that makes `engine`'s features what they are."""
    return {
        **engine_recipe(engine),
        "preprocessing_code": module_digest(preprocess),
        "decoders": {name: metadata.version(name) for name in DECODER_PACKAGES},
    }


def featurizer_id(engine: str, recipe: dict[str, object] | None = None) -> str:
    """`<engine>/<digest of its recipe>`: the value of the `featurizer` column of stored features."""
    return f"{check_engine(engine)}/{recipe_digest(recipe if recipe is not None else featurizer_recipe(engine))}"
