"""Fruits! image features: a Dagster asset graph computed with PySpark.

The definitions live in `fruits_assets.definitions` (`-m fruits_assets.definitions`,
`[tool.dagster]` in pyproject.toml): Spark's Python workers import this package's
vision and Spark modules, and must not build the whole graph (Dagster included) to do so.
"""
