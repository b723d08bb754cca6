"""The S3 lock is a fenced lease: renewals retried, a lost lease stops the run before its next commit, only the
owner releases it, staleness by S3's own clock. Against moto's server (its own process), some through the
fault-injecting proxy."""

import json
import os
import time

import pytest

from fruits_assets.resources.lock import LOCK_NAME, LeaseLost, StorageLocked, take_storage_lock

from .conftest import aws_client, fruit_jpeg, loopback_aws, materialize_command, moto_server
from .faults import FaultPlan, FaultProxy

BUCKET, REGION = "fruits", "eu-west-3"
ROOT = f"s3://{BUCKET}/out"
KEY = f"out/{LOCK_NAME}"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with moto_server(tmp_path_factory.mktemp("moto") / "server.log") as endpoint:
        env = loopback_aws(endpoint, REGION)
        client = aws_client("s3", env)
        client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        yield client, env, endpoint


def _owner(client) -> dict:
    return json.loads(client.get_object(Bucket=BUCKET, Key=KEY)["Body"].read())


def test_a_second_run_is_refused_and_only_the_owner_releases_the_lock(s3):
    client, _, _ = s3
    first = take_storage_lock(ROOT, "run-a", lambda: client, renew_seconds=1, stale_seconds=30)
    with pytest.raises(StorageLocked, match="being written by run run-a"):
        take_storage_lock(ROOT, "run-b", lambda: client, renew_seconds=1, stale_seconds=30)
    # Another run takes the object over (as after a stall): run-a's renewal finds another ETag and stops.
    client.put_object(Bucket=BUCKET, Key=KEY, Body=json.dumps({"run_id": "run-c"}).encode())
    time.sleep(2.5)
    with pytest.raises(LeaseLost, match="taken over"):
        first.check()
    first.release()  # not its lock any more: it must not delete it
    assert _owner(client)["run_id"] == "run-c"
    client.delete_object(Bucket=BUCKET, Key=KEY)


def test_a_lock_not_renewed_is_stale_by_s3s_clock_and_taken_over(s3):
    client, _, _ = s3
    client.put_object(Bucket=BUCKET, Key=KEY, Body=json.dumps({"run_id": "dead", "taken": 9e12}).encode())
    with pytest.raises(StorageLocked, match="being written by run dead"):  # its body's clock says nothing
        take_storage_lock(ROOT, "run-d", lambda: client, renew_seconds=1, stale_seconds=4)
    time.sleep(5)  # by S3's clock, not renewed for longer than stale_seconds
    lease = take_storage_lock(ROOT, "run-d", lambda: client, renew_seconds=1, stale_seconds=4)
    assert _owner(client)["run_id"] == "run-d"
    lease.check()
    lease.release()
    with pytest.raises(client.exceptions.NoSuchKey):
        client.get_object(Bucket=BUCKET, Key=KEY)


def test_renewals_are_retried_through_failures_and_the_lease_holds(s3):
    client, env, endpoint = s3
    host, port = endpoint.removeprefix("http://").split(":")
    plan = FaultPlan(faulty=KEY, methods=("PUT",), after=1, bursts={KEY: 3})  # the take passes, 3 renewals fail
    with FaultProxy((host, int(port)), plan) as proxy:
        faulty = aws_client(
            "s3", loopback_aws(proxy.endpoint, REGION) | {"AWS_ACCESS_KEY_ID": env["AWS_ACCESS_KEY_ID"]}
        )
        lease = take_storage_lock(ROOT, "run-e", lambda: faulty, renew_seconds=1, stale_seconds=12)
        time.sleep(8)
        lease.check()  # three failed renewals, retried: the lease never lapsed
        lease.release()
    assert plan.figures()["gets_failed"] == 3


@pytest.mark.spark
def test_a_run_whose_renewals_fail_stops_before_its_next_commit_and_writes_nothing(s3, tmp_path):
    client, env, endpoint = s3
    for i in range(4):
        client.put_object(Bucket=BUCKET, Key=f"images/Test/Kiwi 1/{i}.jpg", Body=fruit_jpeg((120, 100, 40), i))
    host, port = endpoint.removeprefix("http://").split(":")
    plan = FaultPlan(faulty=f"fenced/{LOCK_NAME}", methods=("PUT",), after=1, share=1.0)  # every renewal fails
    with FaultProxy((host, int(port)), plan) as proxy:
        run_env = {**os.environ, **loopback_aws(proxy.endpoint, REGION), "DAGSTER_HOME": str(tmp_path)}
        run_env |= {"FRUITS_IMAGES": f"s3://{BUCKET}/images", "FRUITS_STORAGE": f"s3://{BUCKET}/fenced"}
        run_env |= {"FRUITS_LOCK_RENEW_SECONDS": "0.5", "FRUITS_LOCK_STALE_SECONDS": "2"}
        import subprocess

        run = subprocess.run(materialize_command(), env=run_env, capture_output=True, text=True, timeout=600)
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert "LeaseLost" in output and "lost the storage root" in output
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="fenced/")
    written = [o["Key"] for page in pages for o in page.get("Contents", [])]
    # Nothing but the lock object and the record of the images root, written before the first step.
    assert sorted(written) == [f"fenced/{LOCK_NAME}", "fenced/fruits-storage.json"]
