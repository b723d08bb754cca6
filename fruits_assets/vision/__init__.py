"""Image and model logic as plain functions: no Spark, no Dagster."""
