"""What makes the features, named: stored features are reused only by the featurizer that computed them.

The identity is a digest of the featurizer's recipe: the checkpoint's SHA-256, the
model's code, the preprocessing code, and the versions of the libraries that
decode the images, convert the model and run it. Code is digested from its syntax
tree without docstrings, so reformatting or a comment keeps the features, while
any change to what the code does (a resize, a mean, a layer) makes every image new.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
from importlib import metadata
from types import ModuleType
from typing import Literal, get_args

from fruits_assets.vision import mobilenet, preprocess
from fruits_assets.vision.weights import WEIGHTS_SHA256

EngineName = Literal["litert", "tensorflow"]
ENGINES: tuple[str, ...] = get_args(EngineName)
DEFAULT_ENGINE: EngineName = "litert"
# The libraries whose versions change the numbers: the decoder, the converter, each engine's runtime.
DECODER_PACKAGES = ("pillow",)
ENGINE_PACKAGES = {"litert": ("tensorflow", "ai-edge-litert"), "tensorflow": ("tensorflow",)}


def check_engine(name: str) -> str:
    if name not in ENGINES:
        raise ValueError(f"unknown feature engine {name!r}: choose one of {', '.join(ENGINES)}")
    return name


def code_digest(source: str) -> str:
    """SHA-256 of Python source's syntax tree, docstrings left out: what the code does, not how it is laid out."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            first = body[0].value
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()


def module_digest(module: ModuleType) -> str:
    return code_digest(inspect.getsource(module))


def _versions(packages: tuple[str, ...]) -> dict[str, str]:
    return {name: metadata.version(name) for name in packages}


def model_recipe() -> dict[str, object]:
    """What the model's numbers depend on: its weights, its code, the converter."""
    return {
        "weights_sha256": WEIGHTS_SHA256,
        "model_code": module_digest(mobilenet),
        "converter": _versions(("tensorflow",)),
    }


def featurizer_recipe(engine: str) -> dict[str, object]:
    """Everything that makes `engine`'s features what they are."""
    return {
        "engine": check_engine(engine),
        **model_recipe(),
        "preprocessing_code": module_digest(preprocess),
        "libraries": _versions(DECODER_PACKAGES + ENGINE_PACKAGES[engine]),
    }


def recipe_digest(recipe: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def featurizer_id(engine: str, recipe: dict[str, object] | None = None) -> str:
    """`<engine>/<digest of its recipe>`: the value of the `featurizer` column of stored features."""
    return f"{check_engine(engine)}/{recipe_digest(recipe if recipe is not None else featurizer_recipe(engine))}"
