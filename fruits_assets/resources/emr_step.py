"""The main file of a step on EMR: the run's `FRUITS_*` settings first, then dagster-aws's step runner.

`spark-submit … emr_step.py <bucket> <key of the step run ref>`, as the step launcher submits it.
"""

import json
import os
import posixpath
import sys

import boto3

from fruits_assets.resources.emr import SETTINGS_FILE


def main(bucket: str, step_run_ref_key: str) -> None:
    # Before dagster-aws's runner imports the definitions, which read the settings from the environment.
    settings_key = posixpath.join(posixpath.dirname(step_run_ref_key), SETTINGS_FILE)
    settings = boto3.client("s3").get_object(Bucket=bucket, Key=settings_key)["Body"].read()
    os.environ.update(json.loads(settings))

    from dagster_aws.emr import emr_step_main

    emr_step_main.main(bucket, step_run_ref_key)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
