"""The main file of a step on EMR: the run's settings first, then dagster-aws's step runner.

`spark-submit … emr_step.py <bucket> <key of the step run ref>`, as the step launcher submits it.
"""

import json
import os
import posixpath
import sys

import boto3

from fruits_assets.resources.emr import SETTINGS_FILE
from fruits_assets.resources.s3 import register_encryption


def main(bucket: str, step_run_ref_key: str) -> None:
    # Before dagster-aws's runner imports the definitions, which read the settings from the environment.
    settings_key = posixpath.join(posixpath.dirname(step_run_ref_key), SETTINGS_FILE)
    settings = json.loads(boto3.client("s3").get_object(Bucket=bucket, Key=settings_key)["Body"].read())
    os.environ.update(settings)
    # dagster-aws's runner writes the step's events with clients of boto3's default session: encrypt them too.
    boto3.setup_default_session()
    register_encryption(boto3.DEFAULT_SESSION.events, settings.get("FRUITS_KMS_KEY_ID"))

    from dagster_aws.emr import emr_step_main

    emr_step_main.main(bucket, step_run_ref_key)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
