"""The run config of every op, and a resource that checks all of it before the run's first step.

Dagster checks a run's config against each op's schema when the run is launched
(types, and the engine's allowed names), but the bounds of numbers (`k` up to
1280, a variance target in (0, 1]) only when that op starts: after listing,
screening and featurization have run. `RunConfigCheck` validates every op's
config as the run's resources start, before any Spark work.
"""

from typing import Any

from dagster import Config, ConfigurableResource, InitResourceContext
from pydantic import Field, ValidationError

from fruits_assets.spark.config import DEFAULT_ARROW_BATCH
from fruits_assets.vision.engines import DEFAULT_ENGINE, EngineName
from fruits_assets.vision.mobilenet import FEATURE_DIM
from fruits_assets.vision.preprocess import DEFAULT_MAX_PIXELS

RUN_CONFIG_CHECK = "run_config_check"


class ScreeningConfig(Config):
    max_pixels: int = Field(
        default=DEFAULT_MAX_PIXELS,
        ge=1,
        description="Images with more pixels are rejected as too_large, from their header, before decoding.",
    )


class FeaturizationConfig(Config):
    engine: EngineName = Field(default=DEFAULT_ENGINE, description="Feature engine: litert or tensorflow.")
    batch_size: int = Field(
        default=4, ge=1, le=1024, description="Images per model call (small batches stay in cache)."
    )
    arrow_batch_size: int = Field(
        default=DEFAULT_ARROW_BATCH, ge=1, le=65536, description="Rows per Arrow batch sent to the Python workers."
    )


class PCAConfig(Config):
    k: int | None = Field(
        default=None, ge=1, le=FEATURE_DIM, description="Components to keep; by default chosen by variance_target."
    )
    variance_target: float = Field(
        default=0.90, gt=0, le=1, description="Smallest cumulative explained variance the chosen k must reach."
    )


OP_CONFIGS: dict[str, type[Config]] = {
    "screen_images": ScreeningConfig,
    "mobilenet_features": FeaturizationConfig,
    "pca_model": PCAConfig,
}


def check_run_config(run_config: dict[str, Any]) -> None:
    """Every op's config against its class; one error naming each bad setting, its path and what it accepts."""
    problems = []
    for op, model in OP_CONFIGS.items():
        given = run_config.get("ops", {}).get(op, {}).get("config", {})
        try:
            model(**given)
        except ValidationError as error:
            for detail in error.errors():
                where = ".".join(str(part) for part in ("ops", op, "config", *detail["loc"]))
                problems.append(f"{where}: {detail['msg']} (got {detail.get('input')!r})")
    if problems:
        raise ValueError("invalid run config, nothing was run:\n  " + "\n  ".join(problems))


class RunConfigCheck(ConfigurableResource):
    """Validates the whole run's op config as the run starts, before its first step and any Spark work."""

    def setup_for_execution(self, context: InitResourceContext) -> None:
        if context.run is not None:
            check_run_config(context.run.run_config)
