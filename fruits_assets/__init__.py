"""Fruits! image features: a Dagster asset graph computed with PySpark."""

from fruits_assets.definitions import defs

__all__ = ["defs"]
