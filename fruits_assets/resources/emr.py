"""The EMR deployment: dagster-aws's PySpark step launcher runs each Spark step on an existing EMR cluster.

The launcher stages the step (and this package, zipped, and the run's settings)
under the staging prefix, adds it to the cluster as a `spark-submit` step, and
replays the events the step writes back to S3. The nodes' Python environment
comes from `bootstrap/install-fruits.sh`; EMR's own `s3://` file system serves
the storage.

A step with nothing to do (its inputs unchanged, decided from the tables' logs and
the outputs' provenance) is not sent to the cluster: it runs on the orchestrating
host, where it finds so again and commits nothing, and no EMR step is added.

This module is the project's one adapter to Dagster's internals: dagster-aws's
launcher stages a pickled step run ref whose file name only `dagster._core` names,
and running a step in this process, as Dagster does when there is no launcher, is
`core_dagster_event_sequence_for_step`.
"""

import gzip
import io
import json
import os
import pickle
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError
from dagster import ResourceDefinition, StepLauncher, deserialize_value
from dagster._core.execution.plan.execute_step import core_dagster_event_sequence_for_step
from dagster._core.execution.plan.external_step import PICKLED_EVENTS_FILE_NAME, PICKLED_STEP_RUN_REF_FILE_NAME
from dagster_aws.emr import EmrError
from dagster_aws.emr.pyspark_step_launcher import CODE_ZIP_NAME, EmrPySparkStepLauncher

from fruits_assets.resources.s3 import encrypt_writes

PACKAGE = Path(__file__).resolve().parents[1]
# Per op: whether its step has work, decided on the orchestrating host from the tables' logs and the outputs'
# provenance (no JVM); a step with none runs right there, and no EMR step is added. Assets register theirs.
STEP_WORK: dict[str, Callable[[Any, dict], bool]] = {}
SETTINGS_FILE = "fruits_settings.json"
STDERR_TAIL_LINES = 40
LOG_WAIT_SECONDS = 360.0  # EMR copies a step's logs to the cluster's log URI every five minutes


def register_step_work(op_name: str, has_work: Callable[[Any, dict], bool]) -> None:
    """`has_work(resources, op_config)`: whether the op's step has anything to do (see `STEP_WORK`)."""
    STEP_WORK[op_name] = has_work


def zip_package(destination: str, package: Path = PACKAGE) -> None:
    """This package's Python files as `fruits_assets/…` in a zip for `--py-files`; nothing else of the repository."""
    with zipfile.ZipFile(destination, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(package.rglob("*.py")):
            archive.write(path, path.relative_to(package.parent).as_posix())


class _TextOnly(pickle.Unpickler):
    """A step's events file is a pickled string (Dagster's serialized events): nothing else may load."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"the step's events file names {module}.{name}: refused, only text is expected")


def read_events_file(data: bytes) -> list:
    """The events a step wrote: the string unpickled with no globals allowed, then Dagster's serdes.

    dagster-aws's launcher unpickles the file as it finds it; whoever could write the
    staging prefix could then run code here. Refusing every global keeps a tampered
    file to a failed step.
    """
    text = _TextOnly(io.BytesIO(data)).load()
    if not isinstance(text, str):
        raise pickle.UnpicklingError(f"the step's events file holds a {type(text).__name__}, not serialized events")
    return deserialize_value(text)


def stderr_tail(gzipped: bytes, lines: int = STDERR_TAIL_LINES) -> str:
    return "\n".join(gzip.decompress(gzipped).decode("utf-8", "replace").splitlines()[-lines:])


class PackageEmrStepLauncher(EmrPySparkStepLauncher):
    """dagster-aws's launcher, staging only this package, the run's settings, and telling why a step failed.

    The stock launcher zips the whole folder it is given, which for a repository
    means its virtualenv and data; the step needs only the package. A step's
    process on the cluster does not inherit this one's environment: the run's
    settings travel as a file beside the step, which `emr_step.py` reads first.
    Every object it stages is encrypted. When a step fails, the tail of its stderr
    (from the cluster's log URI) is logged in the run, beside the step's own error.
    """

    def __init__(
        self,
        *,
        kms_key_id: str | None,
        step_environment: Mapping[str, str],
        poll_seconds: float,
        log_wait_seconds: float = LOG_WAIT_SECONDS,
        **launcher,
    ) -> None:
        super().__init__(**launcher)
        self.kms_key_id, self.step_environment = kms_key_id, dict(step_environment)
        self.poll_seconds, self.log_wait_seconds = poll_seconds, log_wait_seconds

    def launch_step(self, step_context) -> Iterator:
        has_work = STEP_WORK.get(step_context.op.name)
        if has_work is not None and not has_work(step_context.resources, step_context.op_config or {}):
            step_context.log.info("nothing to do: the step runs here, no EMR step is added")
            yield from core_dagster_event_sequence_for_step(step_context)
            return
        yield from super().launch_step(step_context)

    def _main_file_local_path(self):
        return str(Path(__file__).with_name("emr_step.py"))

    def _s3(self):
        return encrypt_writes(boto3.client("s3", region_name=self.region_name), self.kms_key_id)

    def _post_artifacts(self, log, step_run_ref, run_id, step_key):
        s3 = self._s3()

        def upload(local_path: str, name: str) -> None:
            log.debug(f"Uploading {local_path} to {self._artifact_s3_uri(run_id, step_key, name)}")
            s3.upload_file(local_path, self.staging_bucket, self._artifact_s3_key(run_id, step_key, name))

        with tempfile.TemporaryDirectory() as work:
            upload(self._main_file_local_path(), self._main_file_name())
            zip_package(os.path.join(work, CODE_ZIP_NAME))
            upload(os.path.join(work, CODE_ZIP_NAME), CODE_ZIP_NAME)
            ref = os.path.join(work, PICKLED_STEP_RUN_REF_FILE_NAME)
            with open(ref, "wb") as file:
                pickle.dump(step_run_ref, file)
            upload(ref, PICKLED_STEP_RUN_REF_FILE_NAME)
            settings = os.path.join(work, SETTINGS_FILE)
            Path(settings).write_text(json.dumps(self.step_environment))
            upload(settings, SETTINGS_FILE)

    def read_events(self, s3, run_id, step_key):
        key = self._artifact_s3_key(run_id, step_key, PICKLED_EVENTS_FILE_NAME)
        try:
            return read_events_file(s3.Object(self.staging_bucket, key).get()["Body"].read())
        except ClientError as error:
            if error.response["Error"]["Code"] == "NoSuchKey":
                return []  # the step has not written any yet
            raise

    def wait_for_completion_and_log(self, run_id, step_key, emr_step_id, step_context) -> Iterator:
        s3 = boto3.resource("s3", region_name=self.region_name)
        failed = False
        try:
            for event in self.wait_for_completion(
                step_context, s3, run_id, step_key, emr_step_id, check_interval=self.poll_seconds
            ):
                failed = failed or event.is_step_failure
                yield event
        except EmrError as error:
            raise EmrError(f"{error}{self._stderr_of(step_context.log, emr_step_id)}") from error
        except BaseException:  # the run was interrupted (terminated from the UI, SIGTERM): stop the step too
            self._cancel(step_context.log, emr_step_id)
            raise
        if failed:
            step_context.log.error(f"EMR step {emr_step_id} failed{self._stderr_of(step_context.log, emr_step_id)}")

    def _cancel(self, log, emr_step_id: str) -> None:
        """Ask EMR to cancel a step whose run is gone. Whether or not it can (a running step may not be
        cancellable), the step commits nothing more: its every commit first checks that its run still holds the
        storage root's lock, which the interrupted run releases."""
        try:
            client = boto3.client("emr", region_name=self.region_name)
            client.cancel_steps(
                ClusterId=self.cluster_id, StepIds=[emr_step_id], StepCancellationOption="SEND_INTERRUPT"
            )
            log.warning(f"EMR step {emr_step_id} cancelled: its run was interrupted")
        except Exception as error:  # noqa: BLE001 - the run is being interrupted: say so, never mask it
            log.warning(f"EMR step {emr_step_id} could not be cancelled ({error}); the storage lock fences it")

    def _stderr_of(self, log, emr_step_id: str) -> str:
        """The tail of a step's stderr from the cluster's log URI, waiting a bounded time for EMR to copy it."""
        try:
            bucket, prefix = self.emr_job_runner.log_location_for_cluster(self.cluster_id)
        except EmrError as error:
            return f" ({error})"
        key = f"{prefix}{self.cluster_id}/steps/{emr_step_id}/stderr.gz"
        s3, deadline = self._s3(), time.monotonic() + self.log_wait_seconds
        log.info(f"Fetching the step's stderr from s3://{bucket}/{key} (EMR copies it within five minutes)")
        while True:
            try:
                tail = stderr_tail(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
                return f"; the last lines of its stderr (s3://{bucket}/{key}):\n{tail}"
            except ClientError as error:
                if error.response["Error"]["Code"] not in ("NoSuchKey", "404") or time.monotonic() > deadline:
                    return f" (its stderr was not at s3://{bucket}/{key} after {self.log_wait_seconds:.0f} s)"
                time.sleep(min(self.poll_seconds, 15.0))


def emr_step_launcher(
    cluster_id: str,
    staging: tuple[str, str],
    region: str,
    kms_key_id: str | None,
    step_environment: Mapping[str, str],
    poll_seconds: float,
) -> ResourceDefinition:
    """The step launcher of the cluster `cluster_id`, staging under (bucket, prefix) `staging`."""
    bucket, prefix = staging
    launcher: StepLauncher = PackageEmrStepLauncher(
        kms_key_id=kms_key_id,
        step_environment=step_environment,
        poll_seconds=poll_seconds,
        region_name=region,
        staging_bucket=bucket,
        staging_prefix=prefix,
        wait_for_logs=False,
        action_on_failure="CONTINUE",
        cluster_id=cluster_id,
        spark_config={"spark": {"submit": {"deployMode": "client"}}},
        local_job_package_path=str(PACKAGE.parent),
        deploy_local_job_package=True,
    )
    return ResourceDefinition.hardcoded_resource(launcher, "Runs each Spark step on the EMR cluster " + cluster_id)
