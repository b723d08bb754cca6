"""The EMR deployment's parts that need no cluster: the events reader, the rendered policies and configurations."""

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import serialize_value

from fruits_assets.resources.emr import read_events_file

BOOTSTRAP = Path(__file__).resolve().parents[1] / "bootstrap"
PREFIXES = {
    "images": "s3://photos/fruits-360",
    "storage": "s3://features/runs",
    "release": "s3://artifacts/releases",
    "staging": "s3://artifacts/staging",
    "logs": "s3://logs/emr",
}


class _RunsCode:
    def __reduce__(self):
        return (print, ("this ran on the orchestrating host",))


def test_the_steps_events_are_read_without_running_anything_they_name():
    assert read_events_file(pickle.dumps(serialize_value([]))) == []
    with pytest.raises(pickle.UnpicklingError, match=r"names builtins\.print: refused"):
        read_events_file(pickle.dumps(_RunsCode()))
    with pytest.raises(pickle.UnpicklingError, match="holds a list"):
        read_events_file(pickle.dumps([1, 2]))


def _render_policies(tmp_path: Path, *kms: str) -> dict[str, dict]:
    arguments = [f"--{name}={uri}" for name, uri in PREFIXES.items()]
    command = [sys.executable, str(BOOTSTRAP / "render_policies.py"), str(tmp_path), "--account=123456789012"]
    subprocess.run([*command, *arguments, *kms], check=True)
    return {p.name: json.loads(p.read_text()) for p in tmp_path.glob("*.json")}


def _statements(document: dict) -> dict[str, dict]:
    return {s["Sid"]: s for s in document["Statement"] if "Sid" in s}


def test_the_nodes_may_touch_only_their_prefixes_and_write_only_events_to_the_staging(tmp_path):
    node = _statements(_render_policies(tmp_path, "--kms-key-arn=arn:aws:kms:eu-west-3:1:key/k")["node-policy.json"])
    resources = [
        r for s in node.values() for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])
    ]
    s3 = [r for r in resources if r.startswith("arn:aws:s3:::")]
    assert all("*" not in r.split("/", 1)[0] for r in s3)  # never a whole bucket's objects, never all buckets
    assert {r.split(":::")[1].split("/")[0] for r in s3} == {"photos", "features", "artifacts", "logs"}
    actions = {a for s in node.values() for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert not any(a.endswith(":*") for a in actions)
    assert node["WriteOnlyTheStepsEvents"]["Resource"] == "arn:aws:s3:::artifacts/staging/*/events.pkl"
    assert node["ReadTheImages"]["Action"] == "s3:GetObject"  # the photos are read, never written
    assert node["UseTheKey"]["Resource"] == "arn:aws:kms:eu-west-3:1:key/k"


def test_without_a_key_no_grant_names_one_and_each_bucket_gets_its_policy(tmp_path):
    documents = _render_policies(tmp_path)
    assert "UseTheKey" not in _statements(documents["node-policy.json"])
    assert {n for n in documents if n.startswith("bucket-policy-")} == {
        f"bucket-policy-{b}.json" for b in ("photos", "features", "artifacts", "logs")
    }
    refusals = _statements(documents["bucket-policy-features.json"])
    assert refusals["RefuseWritesAskingForOtherEncryption"]["Effect"] == "Deny"
    assert "RefuseWritesUnderAnotherKey" not in refusals


def test_a_whole_bucket_is_refused_as_a_prefix(tmp_path):
    arguments = [f"--{name}={uri}" for name, uri in PREFIXES.items()] + ["--images=s3://photos"]
    command = [sys.executable, str(BOOTSTRAP / "render_policies.py"), str(tmp_path), "--account=1", *arguments]
    refused = subprocess.run(command, capture_output=True, text=True)
    assert refused.returncode != 0 and "a prefix of its own" in refused.stderr


@pytest.mark.parametrize(
    ("key", "expected"), [("", None), ("arn:aws:kms:eu-west-3:1:key/k", "arn:aws:kms:eu-west-3:1:key/k")]
)
def test_emrfs_writes_every_object_encrypted_with_the_key_when_given(key, expected):
    rendered = subprocess.run(
        [sys.executable, str(BOOTSTRAP / "render_configurations.py"), key], capture_output=True, text=True, check=True
    )
    emrfs = next(c for c in json.loads(rendered.stdout) if c["Classification"] == "emrfs-site")["Properties"]
    assert emrfs["fs.s3.enableServerSideEncryption"] == "true"
    assert emrfs.get("fs.s3.serverSideEncryption.kms.keyId") == expected


def test_create_cluster_uses_the_projects_roles_not_the_default_ones():
    script = (BOOTSTRAP / "create-cluster.sh").read_text()
    assert "--use-default-roles" not in script
    assert "--service-role" in script and "InstanceProfile=" in script and "render_configurations.py" in script
