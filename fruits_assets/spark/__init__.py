"""Spark glue around the plain image and feature functions: no Dagster here."""
