"""Nothing lost, whatever fails: S3 answering a share of reads with 503 SlowDown or a reset, some in long bursts.

moto's server plays S3, behind a fault-injecting proxy (`faults.py`) that every client
of the run goes through. A share of the photos' GETs fail, and a few photos fail their
first GETs in bursts longer than the S3 client's own retries; one photo fails every GET
for the whole first run (outlasting the pipeline's retries too, whatever the load on the
machine), then heals. The run retries within itself, records what still failed as
`unreadable` and reads it again on the next run: after that run every photo is
featurized, nothing is rejected for a fault, and the outputs equal those of a run
without faults on the same photos.
"""

import os

import pytest

from fruits_assets.definitions import FEATURE_PIPELINE
from fruits_assets.vision.ingest import READ_ATTEMPTS

from .conftest import aws_client, fruit_jpeg, loopback_aws, materialize_in_shell, moto_server, s3_options
from .faults import FaultPlan, FaultProxy
from .outputs import S3Store, assert_same_outputs, snapshot

BUCKET, REGION = "fruits", "eu-west-3"
COLORS = {"Apple Red 1": (200, 20, 30), "Banana 1": (240, 220, 40), "Kiwi 1": (120, 100, 40)}
LASTING = "Training/Apple Red 1/5.jpg"  # fails every GET until the test heals it, between the two runs
BURSTS = {"Test/Kiwi 1/1.jpg": 14, "Training/Banana 1/2.jpg": 14, LASTING: 10**9}
# Each read: 5 tries of the pipeline's, each of s3fs's 5 attempts of botocore's 2 (AWS_MAX_ATTEMPTS): 14 failures
# outlast one try of the client's own retries (10) and are mended by the pipeline's next try. How many GETs one try
# makes varies with where a reset lands and with the machine's load, so the photo that must outlast every try of
# the run fails all of them, and only the next run (after `heal`) reads it.
CLIENT = {"AWS_RETRY_MODE": "standard", "AWS_MAX_ATTEMPTS": "2"}


@pytest.mark.spark
def test_reads_that_fail_outside_the_file_are_retried_and_the_outputs_equal_a_clean_run(tmp_path):
    with moto_server(tmp_path / "moto.log") as endpoint:
        direct = loopback_aws(endpoint, REGION)
        s3 = aws_client("s3", direct)
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        for label, color in COLORS.items():
            for split, count in (("Training", 8), ("Test", 4)):
                for i in range(count):
                    s3.put_object(Bucket=BUCKET, Key=f"images/{split}/{label}/{i}.jpg", Body=fruit_jpeg(color, i))
        s3.put_object(Bucket=BUCKET, Key="images/Test/Kiwi 1/cut.jpg", Body=fruit_jpeg((1, 2, 3))[:800])
        host, port = endpoint.removeprefix("http://").split(":")
        plan = FaultPlan(faulty=f"/{BUCKET}/images/", share=0.15, bursts=BURSTS)
        with FaultProxy((host, int(port)), plan) as proxy:
            env = {**os.environ, **loopback_aws(proxy.endpoint, REGION), **CLIENT}
            env |= {"FRUITS_IMAGES": f"s3://{BUCKET}/images", "FRUITS_STORAGE": f"s3://{BUCKET}/faulty"}
            materialize_in_shell({**env, "DAGSTER_HOME": str(tmp_path / "first")}, FEATURE_PIPELINE)
            after_one = snapshot(S3Store(s3, BUCKET, "faulty", s3_options(direct)), classification=False)
            plan.heal(LASTING)
            materialize_in_shell({**env, "DAGSTER_HOME": str(tmp_path / "second")}, FEATURE_PIPELINE)
            figures = plan.figures()
        clean = {**os.environ, **direct, "DAGSTER_HOME": str(tmp_path / "clean")}
        clean |= {"FRUITS_IMAGES": f"s3://{BUCKET}/images", "FRUITS_STORAGE": f"s3://{BUCKET}/clean"}
        materialize_in_shell(clean, FEATURE_PIPELINE)
        faulty = snapshot(S3Store(s3, BUCKET, "faulty", s3_options(direct)), classification=False)
        expected = snapshot(S3Store(s3, BUCKET, "clean", s3_options(direct)), classification=False)
    print(f"\nfaults injected: {figures}")
    first = after_one["rejected_images"].set_index("path")
    long_burst = f"s3://{BUCKET}/images/{LASTING}"
    assert first.loc[long_burst, "reason"] == "unreadable" and "after 5 attempts" in first.loc[long_burst, "message"]
    assert set(first.index) == {long_burst, f"s3://{BUCKET}/images/Test/Kiwi 1/cut.jpg"}  # the rest was mended
    assert_same_outputs(faulty, expected)
    assert faulty["rejected_images"]["reason"].tolist() == ["truncated"]  # nothing rejected for a fault
    bursts = sum(n for key, n in BURSTS.items() if key != LASTING)
    assert figures["gets_failed"] >= bursts + READ_ATTEMPTS and figures["objects_affected"] > len(BURSTS)
    assert figures["answered_503_slowdown"] > 0 and figures["connections_reset"] > 0
