"""Digests that name what code and settings make: equal when they do the same thing, different otherwise."""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
from types import ModuleType


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


def recipe_digest(recipe: dict[str, object]) -> str:
    """A short digest of a JSON-able recipe, independent of its keys' order."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
