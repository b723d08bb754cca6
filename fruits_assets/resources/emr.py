"""The EMR deployment: dagster-aws's PySpark step launcher runs each Spark step on an existing EMR cluster.

The launcher stages the step (and this package, zipped, and the run's settings)
under the staging prefix, adds it to the cluster as a `spark-submit` step, and
replays the events the step writes back to S3. The nodes' Python environment
comes from `bootstrap/install-fruits.sh`; EMR's own `s3://` file system serves
the storage.

This module is the project's one adapter to Dagster's internals: dagster-aws's
launcher stages a pickled step run ref whose file name only `dagster._core` names.
"""

import json
import os
import pickle
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

import boto3
from dagster import ResourceDefinition, StepLauncher
from dagster._core.execution.plan.external_step import PICKLED_STEP_RUN_REF_FILE_NAME
from dagster_aws.emr.pyspark_step_launcher import CODE_ZIP_NAME, EmrPySparkStepLauncher

from fruits_assets.resources.s3 import encrypt_writes

PACKAGE = Path(__file__).resolve().parents[1]
SETTINGS_FILE = "fruits_settings.json"


def zip_package(destination: str, package: Path = PACKAGE) -> None:
    """This package's Python files as `fruits_assets/…` in a zip for `--py-files`; nothing else of the repository."""
    with zipfile.ZipFile(destination, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(package.rglob("*.py")):
            archive.write(path, path.relative_to(package.parent).as_posix())


class PackageEmrStepLauncher(EmrPySparkStepLauncher):
    """dagster-aws's launcher, staging only this package as the step's code, and the run's settings.

    The stock launcher zips the whole folder it is given, which for a repository
    means its virtualenv and data; the step needs only the package. A step's
    process on the cluster does not inherit this one's environment: the run's
    settings travel as a file beside the step, which `emr_step.py` reads first.
    """

    def __init__(self, *, kms_key_id: str | None, step_environment: Mapping[str, str], **launcher) -> None:
        super().__init__(**launcher)
        self.kms_key_id, self.step_environment = kms_key_id, dict(step_environment)

    def _main_file_local_path(self):
        return str(Path(__file__).with_name("emr_step.py"))

    def _post_artifacts(self, log, step_run_ref, run_id, step_key):
        s3 = encrypt_writes(boto3.client("s3", region_name=self.region_name), self.kms_key_id)

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


def emr_step_launcher(
    cluster_id: str,
    staging: tuple[str, str],
    region: str,
    kms_key_id: str | None,
    step_environment: Mapping[str, str],
) -> ResourceDefinition:
    """The step launcher of the cluster `cluster_id`, staging under (bucket, prefix) `staging`."""
    bucket, prefix = staging
    launcher: StepLauncher = PackageEmrStepLauncher(
        kms_key_id=kms_key_id,
        step_environment=step_environment,
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
