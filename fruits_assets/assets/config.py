"""The run config of every op, and the guard every run passes before its first step.

Dagster checks a run's config against each op's schema when the run is launched
(types, and the engine's allowed names), but the bounds of numbers (`k` up to
1280, a variance target in (0, 1]) only when that op starts: after listing and
featurization have run. `RunGuard` validates every op's config as the run's
resources start, then takes the storage root's lock: a bad value, or a second run
on the same storage, fails before any work.
"""

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any

from dagster import Backoff, Config, Failure, InitResourceContext, Jitter, RetryPolicy
from pydantic import Field, ValidationError

from fruits_assets.resources.guard import StorageGuard
from fruits_assets.spark.config import DEFAULT_ARROW_BATCH
from fruits_assets.spark.errors import lasting_error
from fruits_assets.vision.engines import DEFAULT_ENGINE, EngineName
from fruits_assets.vision.mobilenet import FEATURE_DIM
from fruits_assets.vision.preprocess import DEFAULT_MAX_PIXELS

# About 2.5 minutes of this machine's two cores, and a minute or two of a small EMR cluster: a chunk is worth
# its three commits (a few seconds), and a failure costs at most one chunk of work.
DEFAULT_CHUNK_FILES = 50_000


# Every step of the pipeline takes a slot of this pool: with the instance's `granularity: run` and a limit of one
# (dagster.yaml), runs on this storage root queue behind each other instead of failing on its lock.
POOL = "fruits_storage"
# A step that fails for a reason outside it (S3 throttling, a lost executor, a timeout) is tried again, with
# backoff. What cannot mend by waiting (a bad setting, a lost lease, a failed audit) fails with
# `Failure(allow_retries=False)`, as does an error every attempt would repeat (`retried_only_if_transient`), and a
# failed blocking check is never retried.
TRANSIENT_FAILURES = RetryPolicy(max_retries=3, delay=30, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)


@contextlib.contextmanager
def _lasting_errors_not_retried() -> Iterator[None]:
    try:
        yield
    except Failure:
        raise
    except Exception as error:
        line = lasting_error(error)
        if line is None:
            raise
        raise Failure(f"{line} (not retried: every attempt would fail so)", allow_retries=False) from error


def retried_only_if_transient(compute: Callable) -> Callable:
    """The body of a step under TRANSIENT_FAILURES: an error that cannot mend by waiting (a module missing on the
    nodes, a bug, a query Spark cannot analyse: `spark.errors`) fails the step at once instead of after three
    backoffs."""
    if inspect.isgeneratorfunction(compute):

        @functools.wraps(compute)
        def steps(*args: Any, **kwargs: Any) -> Iterator:
            with _lasting_errors_not_retried():
                yield from compute(*args, **kwargs)

        return steps

    @functools.wraps(compute)
    def step(*args: Any, **kwargs: Any) -> Any:
        with _lasting_errors_not_retried():
            return compute(*args, **kwargs)

    return step


class ListingConfig(Config):
    paths: list[str] | None = Field(
        default=None,
        description="Only these paths (as raw_images holds them: file:/… or s3://…), what a sensor found changed; "
        "unset, the whole images root is listed.",
    )


class IngestConfig(Config):
    max_pixels: int = Field(
        default=DEFAULT_MAX_PIXELS,
        ge=1,
        description="Images with more pixels are rejected as too_large, from their header, before decoding.",
    )
    engine: EngineName = Field(default=DEFAULT_ENGINE, description="Feature engine: litert or tensorflow.")
    batch_size: int = Field(
        default=4, ge=1, le=1024, description="Images per model call (small batches stay in cache)."
    )
    arrow_batch_size: int = Field(
        default=DEFAULT_ARROW_BATCH, ge=1, le=65536, description="Rows per Arrow batch sent to the Python workers."
    )
    chunk_files: int = Field(
        default=DEFAULT_CHUNK_FILES,
        ge=1,
        description="Files per chunk: each chunk is featurized and committed on its own, so a run killed in one "
        "keeps the chunks before it.",
    )


class PCAConfig(Config):
    k: int | None = Field(
        default=None, ge=1, le=FEATURE_DIM, description="Components to keep; by default chosen by variance_target."
    )
    variance_target: float = Field(
        default=0.90, gt=0, le=1, description="Smallest cumulative explained variance the chosen k must reach."
    )


class ClassifierConfig(Config):
    accuracy_floor: float = Field(
        default=0.95, gt=0, le=1, description="The test accuracy the check `test_accuracy_reaches_floor` asks for."
    )
    holdout_share: float = Field(
        default=0.2, gt=0, lt=1, description="Share of each label held out for testing when the tree has no splits."
    )
    seed: int = Field(default=0, description="Seed of the hold-out when the tree has no Training/Test splits.")
    reg_param: float = Field(default=1e-3, ge=0, description="L2 regularization of the logistic regression.")
    known_share: float = Field(
        default=0.99,
        ge=0.5,
        lt=1,
        description="Share of known photos still answered (with 95% confidence): the `unknown` threshold is fitted "
        "on held-out known photos to keep it.",
    )
    unknown_floor: float = Field(
        default=0.95,
        gt=0,
        le=1,
        description="Share of the photos of classes left out of training that must be answered `unknown`, in every "
        "way of leaving classes out (the check `unlearnt_fruits_answered_unknown`).",
    )
    unknown_folds: int = Field(
        default=3, ge=2, le=20, description="Ways of leaving classes out: fold i leaves out every folds-th class."
    )
    fold_rows: int = Field(
        default=6000, ge=100, le=200_000, description="Feature rows sampled for each leave-classes-out fold."
    )


OP_CONFIGS: dict[str, type[Config]] = {
    "raw_images": ListingConfig,
    "screen_and_featurize": IngestConfig,
    "pca_model": PCAConfig,
    "fruit_classifier": ClassifierConfig,
}


def check_run_config(run_config: dict[str, Any]) -> None:
    """Every op's config against its class; one error naming each bad setting, its path and what it accepts."""
    problems = [
        f"ops.{op}: no op of that name takes config (those that do: {', '.join(OP_CONFIGS)})"
        for op in run_config.get("ops", {})
        if op not in OP_CONFIGS
    ]
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


class RunGuard(StorageGuard):
    """The storage guard (`resources/guard.py`) that first checks the whole run config: a bad value fails the run
    before the storage root is locked or anything listed."""

    def validate_run(self, context: InitResourceContext) -> None:
        if context.run is not None:
            check_run_config(context.run.run_config)
