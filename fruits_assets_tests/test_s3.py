"""Images and storage on S3: a real S3-compatible server (moto's standalone server) on loopback, enforcing IAM.

The whole graph is materialized from the shell with `FRUITS_IMAGES` and `FRUITS_STORAGE` on
`s3://`, Spark going through Hadoop's S3A connector, with the credentials of an IAM user whose
policy refuses to read one image: that object is rejected as unreadable, the run goes on. The
outputs are read back without Spark (delta-rs for the tables, boto3 for the rest): once with
SSE-S3, once with SSE-KMS under a key from the same server's KMS API. Keys carry spaces, accents,
non-Latin scripts, quotes and deep nesting; every photo format and the usual litter are mixed in.
"""

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pandas as pd
import pytest

from fruits_assets.definitions import FEATURE_PIPELINE

from .conftest import (
    aws_client,
    fruit_jpeg,
    loopback_aws,
    materialize_command,
    materialize_in_shell,
    moto_server,
    s3_options,
    table,
)
from .formats import PHOTO_FORMATS, STRAYS, photo, stray

BUCKET, REGION = "fruits", "eu-west-3"
IMAGES = {
    "Test/Apple Red 1": (200, 20, 30),
    "Test/Pêche ünd 桃 1": (250, 150, 120),
    'deep/er/Training/Kiwi, "gold"': (120, 100, 40),
}
FORMATS = {f"Test/Plum 1/plum.{ext}": photo(ext, (110, 40, 90), i) for i, ext in enumerate(sorted(PHOTO_FORMATS))}
BROKEN = {"Test/Apple Red 1/empty upload.jpg": (b"", "empty"), "Test/Pêche ünd 桃 1/ü cut.jpg": (None, "truncated")}
BROKEN |= {f"Test/Plum 1/{name}": (stray(name), str(reason)) for name, (_, reason) in STRAYS.items()}
FORBIDDEN = "Test/Apple Red 1/not yours.jpg"  # the pipeline's credentials may not read it
BIN = Path(sys.executable).parent


def _pipeline_policy() -> dict:
    """Everything, but reading the one forbidden object."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"},
            {"Effect": "Deny", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{BUCKET}/images/{FORBIDDEN}"},
        ],
    }


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """moto's standalone server on a free loopback port, enforcing IAM; yields an IAM user's environment."""
    log = tmp_path_factory.mktemp("moto") / "server.log"
    # The first three requests set up the user without credentials; every later one is authorized by IAM.
    with moto_server(log, env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}) as endpoint:
        iam = aws_client("iam", loopback_aws(endpoint, REGION))
        iam.create_user(UserName="pipeline")
        key = iam.create_access_key(UserName="pipeline")["AccessKey"]
        iam.put_user_policy(UserName="pipeline", PolicyName="pipeline", PolicyDocument=json.dumps(_pipeline_policy()))
        yield loopback_aws(endpoint, REGION) | {
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        }


@pytest.fixture(scope="module")
def bucket(s3_server):
    """A bucket with images under `images/`: awkward keys, every photo format, litter and broken objects."""
    s3 = aws_client("s3", s3_server)
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    for folder, color in IMAGES.items():
        for i in range(3):
            s3.put_object(Bucket=BUCKET, Key=f"images/{folder}/{i} ü.jpg", Body=fruit_jpeg(color, seed=i))
    for key, content in FORMATS.items():
        s3.put_object(Bucket=BUCKET, Key=f"images/{key}", Body=content)
    for key, (body, _) in BROKEN.items():
        s3.put_object(Bucket=BUCKET, Key=f"images/{key}", Body=fruit_jpeg((1, 2, 3))[:900] if body is None else body)
    s3.put_object(Bucket=BUCKET, Key=f"images/{FORBIDDEN}", Body=fruit_jpeg((200, 20, 30), seed=9))
    with pytest.raises(s3.exceptions.ClientError, match="AccessDenied"):
        s3.get_object(Bucket=BUCKET, Key=f"images/{FORBIDDEN}")
    return s3


def _env(s3_server: dict[str, str], home: Path, storage_prefix: str, **settings: str) -> dict[str, str]:
    return {
        **os.environ,
        **s3_server,
        "FRUITS_IMAGES": f"s3://{BUCKET}/images",
        "FRUITS_STORAGE": f"s3://{BUCKET}/{storage_prefix}",
        "DAGSTER_HOME": str(home),
        **settings,
    }


@pytest.fixture(scope="module")
def materialized(s3_server, bucket, tmp_path_factory):
    materialize_in_shell(_env(s3_server, tmp_path_factory.mktemp("dagster_home"), "out"))
    return bucket


@pytest.fixture(scope="module")
def materialized_with_kms(s3_server, bucket, tmp_path_factory):
    """The feature pipeline again, under `kms-out/`, with a KMS key the server created (the classifier's objects
    under the key: test_emr)."""
    key = aws_client("kms", s3_server).create_key(Description="fruits_assets test key")["KeyMetadata"]["Arn"]
    env = _env(s3_server, tmp_path_factory.mktemp("dagster_home"), "kms-out", FRUITS_KMS_KEY_ID=key)
    materialize_in_shell(env, FEATURE_PIPELINE)
    return bucket, key


def _read(s3, key: str) -> bytes:
    return s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def _keys(s3, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _table(s3_server, name: str, prefix: str = "out") -> pd.DataFrame:
    return table(f"s3://{BUCKET}/{prefix}/{name}", s3_options(s3_server))


def test_outputs_keep_the_local_layout_under_the_storage_prefix(materialized):
    s3 = materialized
    tops = {k.split("/")[1] for k in _keys(s3, "out/")}
    assert tops == {
        "raw_images",
        "labeled_images",
        "rejected_images",
        "mobilenet_features",
        "pca_model",
        "pca_features",
        "pca_features.csv",
        "pca_features.csv.json",
        "class_index.json",  # the run's lock object is gone with the run
        "fruit_classifier",
        "phone_model",
        "fruits-storage.json",  # the images root these outputs belong to
        "_state",  # what the last screening left: versions, label counts, the checks' verdicts
    }
    class_index = json.loads(_read(s3, "out/class_index.json"))
    labels = sorted({folder.split("/")[-1] for folder in IMAGES} | {"Plum 1"})
    assert class_index == {label: i for i, label in enumerate(labels)}


def test_every_object_is_written_with_server_side_encryption(materialized):
    s3 = materialized
    assert {s3.head_object(Bucket=BUCKET, Key=k).get("ServerSideEncryption") for k in _keys(s3, "out/")} == {"AES256"}


def test_every_object_is_encrypted_with_the_configured_kms_key(materialized_with_kms):
    s3, key = materialized_with_kms
    keys = _keys(s3, "kms-out/")
    assert "kms-out/pca_features.csv" in keys and "kms-out/class_index.json" in keys
    assert any("/_delta_log/" in k for k in keys)  # Delta's commits too
    heads = [s3.head_object(Bucket=BUCKET, Key=k) for k in keys]
    assert {(h.get("ServerSideEncryption"), h.get("SSEKMSKeyId")) for h in heads} == {("aws:kms", key)}


def test_csv_on_s3_round_trips_awkward_keys_and_labels(materialized):
    csv = pd.read_csv(io.BytesIO(_read(materialized, "out/pca_features.csv")), keep_default_na=False)
    expected = [f"s3://{BUCKET}/images/{folder}/{i} ü.jpg" for folder in IMAGES for i in range(3)]
    expected += [f"s3://{BUCKET}/images/{key}" for key in FORMATS]
    assert csv["path"].tolist() == sorted(expected)
    labels = dict(zip(csv["path"], csv["label"], strict=True))
    assert labels[f's3://{BUCKET}/images/deep/er/Training/Kiwi, "gold"/0 ü.jpg'] == 'Kiwi, "gold"'


def test_every_object_is_featurized_or_rejected_with_its_reason_the_unreadable_one_included(materialized, s3_server):
    rejected = _table(s3_server, "rejected_images")
    reasons = dict(zip(rejected["path"], rejected["reason"], strict=True))
    expected = {f"s3://{BUCKET}/images/{key}": reason for key, (_, reason) in BROKEN.items()}
    assert reasons == expected | {f"s3://{BUCKET}/images/{FORBIDDEN}": "unreadable"}
    denied = rejected.set_index("path").loc[f"s3://{BUCKET}/images/{FORBIDDEN}", "message"]
    assert "Access Denied" in denied or "AccessDenied" in denied or "PermissionError" in denied
    features = _table(s3_server, "mobilenet_features")
    raw = _table(s3_server, "raw_images")
    assert len(raw) == len(features) + len(rejected) == 3 * len(IMAGES) + len(FORMATS) + len(BROKEN) + 1
    assert raw["etag"].notna().all()  # an object's version is its ETag


def _held_lock(s3, prefix: str) -> None:
    owner = {"run_id": "an-earlier-run", "host": "elsewhere", "pid": 1}
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/.fruits-run.lock", Body=json.dumps(owner).encode(), IfNoneMatch="*")


def test_a_second_run_on_the_same_storage_is_refused_before_any_work(materialized, s3_server, tmp_path):
    s3 = materialized
    _held_lock(s3, "out")  # a run alive and writing `out/`: its lock was just written
    before = {k: s3.head_object(Bucket=BUCKET, Key=k)["ETag"] for k in _keys(s3, "out/")}
    env = _env(s3_server, tmp_path, "out")
    refused = subprocess.run(materialize_command(), env=env, capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0
    output = refused.stdout + refused.stderr
    assert f"storage root s3://{BUCKET}/out is being written by run an-earlier-run" in output
    assert "STEP_START" not in output
    after = {k: s3.head_object(Bucket=BUCKET, Key=k)["ETag"] for k in _keys(s3, "out/")}
    assert after == before  # nothing written
    s3.delete_object(Bucket=BUCKET, Key="out/.fruits-run.lock")


def test_a_lock_left_by_a_dead_run_is_taken_over(materialized, s3_server, tmp_path):
    s3 = materialized
    _held_lock(s3, "out")
    time.sleep(5)  # not renewed for longer than FRUITS_LOCK_STALE_SECONDS, by S3's clock: its run died
    stale = {"FRUITS_LOCK_RENEW_SECONDS": "1", "FRUITS_LOCK_STALE_SECONDS": "4"}
    materialize_in_shell(_env(s3_server, tmp_path, "out", **stale))
    assert "out/.fruits-run.lock" not in _keys(s3, "out/")


def test_the_deltalake_reader_and_boto3_agree_on_the_iam_users_view(s3_server):
    """The credentials the tests read with are the pipeline's: the denied object stays denied to them."""
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_server["AWS_ENDPOINT_URL"],
        region_name=REGION,
        aws_access_key_id=s3_server["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=s3_server["AWS_SECRET_ACCESS_KEY"],
    )
    with pytest.raises(s3.exceptions.ClientError, match="AccessDenied"):
        s3.get_object(Bucket=BUCKET, Key=f"images/{FORBIDDEN}")
