"""The pipeline runs itself on S3: uploads become bucket notifications on an SQS queue that the sensor drains, and
its run reads only them; a notification that never arrives is caught by the periodic full listing.

moto's server (its own process) plays S3 and SQS; the real `dg dev` runs the daemon.
"""

import pytest

from .conftest import aws_client, fruit_jpeg, loopback_aws, moto_server
from .daemon import DONE, dagster_dev, materialized, runs, status, wait_for

BUCKET, REGION = "fruits", "eu-west-3"
RECONCILE_HOURS = 0.05  # a full listing every three minutes, so the test sees one
COLORS = {"Apple Red 1": (200, 20, 30), "Banana 1": (240, 220, 40)}


def notify(s3, queue_arn: str | None) -> None:
    """The bucket's notifications of objects created and removed under `images/` to the queue (or none)."""
    configuration = {"QueueConfigurations": []}
    if queue_arn:
        configuration["QueueConfigurations"].append(
            {
                "QueueArn": queue_arn,
                "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
                "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "images/"}]}},
            }
        )
    s3.put_bucket_notification_configuration(Bucket=BUCKET, NotificationConfiguration=configuration)


def upload(s3, folder: str, count: int, color) -> list[str]:
    keys = [f"images/{folder}/{i}.jpg" for i in range(count)]
    for i, key in enumerate(keys):
        s3.put_object(Bucket=BUCKET, Key=key, Body=fruit_jpeg(color, seed=500 + i))
    return keys


@pytest.mark.spark
def test_uploads_become_notifications_whose_run_reads_only_them_and_a_missed_one_is_listed_later(tmp_path):
    with moto_server(tmp_path / "moto.log") as endpoint:
        aws = loopback_aws(endpoint, REGION)
        s3, sqs = aws_client("s3", aws), aws_client("sqs", aws)
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        queue = sqs.create_queue(QueueName="fruits-photos")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        notify(s3, arn)
        upload(s3, "Training/Apple Red 1", 4, COLORS["Apple Red 1"])
        upload(s3, "Training/Banana 1", 4, COLORS["Banana 1"])
        env = aws | {"FRUITS_IMAGES": f"s3://{BUCKET}/images", "FRUITS_STORAGE": f"s3://{BUCKET}/out"}
        env |= {"FRUITS_IMAGES_QUEUE": queue, "FRUITS_RECONCILE_HOURS": str(RECONCILE_HOURS)}
        # The sensor alone: what follows the features is the automation's, tested on a local root.
        env |= {"FRUITS_SENSOR_SECONDS": "3", "FRUITS_AUTOMATION_SECONDS": "3600"}
        with dagster_dev(tmp_path / "home", env, tmp_path / "dg_dev.log") as (_, instance):
            # No table yet: the first tick lists the prefix in full.
            full = wait_for("the first, full listing", lambda: runs(instance, **{"fruits/reason": "reconcile"}), 90)[0]
            wait_for("it done", lambda: status(instance, full) in DONE, timeout=400, every=1)
            assert materialized(instance, full, "labeled_images")["files_read"] == 8

            uploaded = upload(s3, "Test/Apple Red 1", 5, COLORS["Apple Red 1"])
            notified = wait_for(
                "a run for the notifications", lambda: runs(instance, **{"fruits/reason": "notifications"}), timeout=60
            )[0]
            wait_for("it done", lambda: status(instance, notified) in DONE, timeout=400, every=1)
            assert materialized(instance, notified, "labeled_images")["files_read"] == 5
            paths = notified.run_config["ops"]["raw_images"]["config"]["paths"]
            assert sorted(paths) == sorted(f"s3://{BUCKET}/{key}" for key in uploaded)  # only them, no listing

            notify(s3, None)  # notifications off: this upload is never announced
            [missed] = upload(s3, "Test/Banana 1", 1, COLORS["Banana 1"])
            notify(s3, arn)
            reconciled = wait_for(
                "the periodic full listing",
                lambda: runs(instance, **{"fruits/reason": "reconcile"})[1:],
                timeout=RECONCILE_HOURS * 3600 + 120,
                every=2,
            )[0]
            wait_for("it done", lambda: status(instance, reconciled) in DONE, timeout=400, every=1)
            assert materialized(instance, reconciled, "labeled_images")["files_read"] == 1
            assert reconciled.tags["fruits/reason"] == "reconcile" and missed.endswith("0.jpg")
            assert all(r.status.value != "FAILURE" for r in instance.get_runs())
