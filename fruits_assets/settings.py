"""Every setting the project reads from the environment: read once, here, validated, each with its default.

The definitions are built from one `Settings` value; nothing below them reads the
environment (the EMR step's entry restores the run's settings on the cluster
before this module reads them there). A bad setting fails as the definitions
load, before any work starts, with a message naming the variable and what it accepts.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from fruits_assets.vision.paths import S3_SCHEMES, absolute_location, bucket_and_prefix, is_within, uses_s3

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STORAGE = str(PROJECT_ROOT / "storage")
DEFAULT_REGION = "eu-west-3"  # Paris: the images are personal data under GDPR, they stay in the EU
DEPLOYMENTS = ("local", "cluster", "emr")
DEFAULT_STAGING_PREFIX = "fruits-assets-staging"
LOCAL_KEEP_WARM_SECONDS = 600.0  # photos arrive all day: the next run comes within minutes
# Where a run commits something a reader sees: each table, model and file, in the order a run reaches them.
COMMIT_POINTS = (
    "raw_images",
    "mobilenet_features",
    "labeled_images",
    "rejected_images",
    "class_index",
    "pca_model",
    "pca_features",
    "pca_features_csv",
    "fruit_classifier",
    "phone_model",
)


class SettingsError(ValueError):
    """A setting is missing or wrong; the message names it and says what it accepts."""


def _env(name: str, help_text: str) -> dict[str, str]:
    return {"env": name, "help": help_text}


@dataclass(frozen=True)
class Settings:
    """The project's settings, one field per environment variable (its name in the field's metadata)."""

    images: str = field(metadata=_env("FRUITS_IMAGES", "images root: a local path or s3://bucket/prefix"))
    storage: str = field(
        default=DEFAULT_STORAGE, metadata=_env("FRUITS_STORAGE", "where every asset is stored: a path or s3://")
    )
    deployment: str = field(default="local", metadata=_env("FRUITS_DEPLOYMENT", "one of " + ", ".join(DEPLOYMENTS)))
    spark_master: str | None = field(
        default=None, metadata=_env("FRUITS_SPARK_MASTER", "with cluster: spark://host:7077, k8s://…, yarn")
    )
    emr_cluster_id: str | None = field(default=None, metadata=_env("FRUITS_EMR_CLUSTER_ID", "with emr: j-…"))
    emr_staging: str | None = field(
        default=None, metadata=_env("FRUITS_EMR_STAGING", "with emr: s3://bucket/prefix where steps are staged")
    )
    emr_poll_seconds: float = field(
        default=15.0, metadata=_env("FRUITS_EMR_POLL_SECONDS", "with emr: seconds between polls of a step's state")
    )
    lock_renew_seconds: float = field(
        default=60.0, metadata=_env("FRUITS_LOCK_RENEW_SECONDS", "on S3: seconds between renewals of the run's lock")
    )
    lock_stale_seconds: float = field(
        default=300.0,
        metadata=_env("FRUITS_LOCK_STALE_SECONDS", "on S3: a lock not renewed for this long is taken over"),
    )
    images_queue: str | None = field(
        default=None,
        metadata=_env(
            "FRUITS_IMAGES_QUEUE", "on S3: the SQS queue URL the images bucket sends its event notifications"
        ),
    )
    sensor_seconds: float = field(
        default=30.0, metadata=_env("FRUITS_SENSOR_SECONDS", "seconds between the new_photos sensor's ticks")
    )
    reconcile_hours: float = field(
        default=24.0,
        metadata=_env("FRUITS_RECONCILE_HOURS", "on S3: hours between full listings that catch missed notifications"),
    )
    automation_seconds: float = field(
        default=30.0, metadata=_env("FRUITS_AUTOMATION_SECONDS", "seconds between evaluations of the automation")
    )
    freshness_hours: float = field(
        default=6.0,
        metadata=_env("FRUITS_FRESHNESS_HOURS", "the CSV or classifier lagging the newest photos longer warns"),
    )
    kms_key_id: str | None = field(
        default=None, metadata=_env("FRUITS_KMS_KEY_ID", "a KMS key: SSE-KMS for every object written (else SSE-S3)")
    )
    aws_region: str = field(default=DEFAULT_REGION, metadata=_env("AWS_REGION", "the region of the buckets and EMR"))
    aws_endpoint_url: str | None = field(
        default=None, metadata=_env("AWS_ENDPOINT_URL", "an S3-compatible endpoint instead of AWS")
    )
    driver_ip: str | None = field(
        default=None, metadata=_env("SPARK_LOCAL_IP", "with cluster: the address executors reach the driver at")
    )
    spark_keep_warm_seconds: float | None = field(
        default=None,
        metadata=_env(
            "FRUITS_SPARK_KEEP_WARM_SECONDS",
            "seconds a Spark driver stays warm after a run, for the next; 0: a JVM per run (default: "
            f"{LOCAL_KEEP_WARM_SECONDS:g} with local, 0 with cluster, whose executors a warm driver would hold)",
        ),
    )
    worker_python: str = field(default=sys.executable, metadata=_env("PYSPARK_PYTHON", "the Python of Spark's workers"))
    pause_after_commit: str | None = field(
        default=None,
        metadata=_env(
            "FRUITS_PAUSE_AFTER_COMMIT",
            "for recovery drills and tests: stop (sleep) right after this commit point (`point` or `point:n`, its "
            "n-th commit), to be killed there; points: " + ", ".join(COMMIT_POINTS),
        ),
    )
    inside_spark_submit: bool = field(
        default=False, metadata=_env("PYSPARK_GATEWAY_PORT", "set by spark-submit: this process is a step's driver")
    )

    def __post_init__(self) -> None:
        self._check()

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """The settings the environment holds; unset (or empty) variables take their defaults."""
        values: dict[str, object] = {}
        for spec in fields(cls):
            raw = environ.get(spec.metadata["env"])
            if spec.name == "inside_spark_submit":
                values[spec.name] = raw is not None
            elif spec.type in ("float", "float | None") and raw:
                values[spec.name] = _number(spec.name, raw)
            elif spec.name == "images" or raw:  # FRUITS_IMAGES has no default: an empty one is an error
                values[spec.name] = raw or ""
        return cls(**values)  # type: ignore[arg-type]

    def step_environment(self) -> dict[str, str]:
        """The `FRUITS_*` settings a step on EMR needs, as environment variables for `emr_step.py` to restore."""
        names = ("images", "storage", "deployment", "kms_key_id")
        return {_name_of(n): str(getattr(self, n)) for n in names if getattr(self, n) is not None}

    @property
    def keep_warm_seconds(self) -> float:
        """How long a Spark driver stays warm for the next run: as set, else a while locally and not on a cluster."""
        if self.spark_keep_warm_seconds is not None:
            return self.spark_keep_warm_seconds
        return LOCAL_KEEP_WARM_SECONDS if self.deployment == "local" else 0.0

    @property
    def needs_s3(self) -> bool:
        """Whether Spark reads or writes S3 (through S3A, locally and on a cluster)."""
        return uses_s3(self.images, self.storage)

    @property
    def staging(self) -> tuple[str, str]:
        """The EMR staging location as (bucket, prefix)."""
        bucket, prefix = bucket_and_prefix(self.emr_staging or "")
        return bucket, prefix or DEFAULT_STAGING_PREFIX

    def _check(self) -> None:
        if not self.images.strip():
            _fail("images", "is not set (or empty); set it to the folder or s3:// prefix holding the photos")
        if self.deployment not in DEPLOYMENTS:
            _fail("deployment", f"is {self.deployment!r}; expected one of {', '.join(DEPLOYMENTS)}")
        for name in ("images", "storage"):
            if "::" in getattr(self, name):
                _fail(
                    name,
                    f"is {getattr(self, name)!r}: '::' chains file systems in the URLs this project's readers "
                    "and writers take (fsspec), so its files would be looked for elsewhere; rename that folder",
                )
        images, storage = absolute_location(self.images), absolute_location(self.storage)
        if is_within(storage, images):
            _fail(
                "storage",
                f"{storage} is inside the images root {images} (FRUITS_IMAGES): "
                "its outputs would be read as photos by the next run",
            )
        if self.deployment == "cluster" and not self.spark_master:
            _fail("spark_master", "is required with FRUITS_DEPLOYMENT=cluster (e.g. spark://host:7077)")
        if self.deployment == "emr":
            self._check_emr()
        if not self.emr_poll_seconds >= 1:
            _fail("emr_poll_seconds", f"is {self.emr_poll_seconds}; expected a number of seconds, 1 or more")
        if self.pause_after_commit is not None:
            point, _, nth = self.pause_after_commit.partition(":")
            if point not in COMMIT_POINTS or not (nth == "" or (nth.isdigit() and int(nth) >= 1)):
                _fail(
                    "pause_after_commit",
                    f"is {self.pause_after_commit!r}; expected a commit point, optionally with which of its "
                    f"commits (mobilenet_features:3): one of {', '.join(COMMIT_POINTS)}",
                )
        for name, least in (
            ("sensor_seconds", 1),
            ("automation_seconds", 1),
            ("reconcile_hours", 0.0003),
            ("freshness_hours", 0.01),
        ):
            if not getattr(self, name) >= least:
                _fail(name, f"is {getattr(self, name)}; expected a number, {least} or more")
        if self.images_queue is not None and not self.images_queue.startswith(("https://", "http://")):
            _fail("images_queue", f"is {self.images_queue!r}; expected an SQS queue URL (https://sqs.…/account/name)")
        if self.spark_keep_warm_seconds is not None and not self.spark_keep_warm_seconds >= 0:
            _fail("spark_keep_warm_seconds", f"is {self.spark_keep_warm_seconds}; expected seconds, 0 or more")
        if not self.lock_renew_seconds >= 0.5:
            _fail("lock_renew_seconds", f"is {self.lock_renew_seconds}; expected a number of seconds, 0.5 or more")
        if not self.lock_stale_seconds >= 4 * self.lock_renew_seconds:
            _fail(
                "lock_stale_seconds",
                f"is {self.lock_stale_seconds}; expected at least four renewals' worth "
                f"({4 * self.lock_renew_seconds:g} s with FRUITS_LOCK_RENEW_SECONDS={self.lock_renew_seconds:g})",
            )

    def _check_emr(self) -> None:
        """Where the run is orchestrated, what the launcher needs; everywhere, storage the cluster can reach."""
        if not self.inside_spark_submit and not self.emr_cluster_id:
            _fail("emr_cluster_id", "is required with FRUITS_DEPLOYMENT=emr (the cluster's id, j-…)")
        staging = self.emr_staging or ""
        if not self.inside_spark_submit and not (staging.startswith("s3://") and staging[5:].strip("/")):
            _fail("emr_staging", f"is {self.emr_staging!r}; with FRUITS_DEPLOYMENT=emr it must be s3://bucket/prefix")
        for name in ("images", "storage"):
            if not getattr(self, name).startswith(S3_SCHEMES):
                _fail(name, "must be on S3 (s3://bucket/prefix) with FRUITS_DEPLOYMENT=emr: the cluster cannot see it")
        if not self.aws_region.startswith("eu-"):
            warnings.warn(
                f"AWS_REGION={self.aws_region} is outside the EU: photos of the public are personal data under GDPR",
                stacklevel=3,
            )


def storage_from_environment(environ: Mapping[str, str] = os.environ) -> str:
    """The storage root alone (`FRUITS_STORAGE`, or its default): what `fruits identify` reads from."""
    return environ.get("FRUITS_STORAGE") or DEFAULT_STORAGE


def _name_of(field_name: str) -> str:
    return next(f.metadata["env"] for f in fields(Settings) if f.name == field_name)


def _fail(field_name: str, problem: str) -> None:
    raise SettingsError(f"{_name_of(field_name)} {problem}")


def _number(field_name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        _fail(field_name, f"is {raw!r}; expected a number")
        raise
