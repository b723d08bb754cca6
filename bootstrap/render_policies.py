"""The IAM and bucket policies of bootstrap/iam/, filled in for one deployment: every grant scoped to its prefix.

    python3 render_policies.py OUT --account 123456789012 --images s3://photos/fruits \
        --storage s3://features/fruits --release s3://artifacts/releases/0.1.0 \
        --staging s3://artifacts/staging --logs s3://logs/emr [--kms-key-arn arn:aws:kms:…]

Writes one JSON file per template into OUT, for `aws iam put-role-policy` and
`aws s3api put-bucket-policy` (the README's runbook). Without a KMS key, the grants
and refusals that name one are left out (SSE-S3). Standard library only.
"""

import argparse
import json
import re
from pathlib import Path

TEMPLATES = Path(__file__).with_name("iam")
PREFIXED = ("images", "storage", "release", "staging", "logs")
NEEDS_KEY = {"UseTheKey", "RefuseWritesUnderAnotherKey"}


def bucket_and_path(uri: str) -> tuple[str, str]:
    """`s3://bucket/prefix` as (bucket, prefix): grants name `prefix` and `prefix/*`, never `prefix-other/`."""
    match = re.fullmatch(r"s3://([^/]+)/+([^*?]+?)/*", uri)
    if not match:
        raise SystemExit(f"expected s3://bucket/prefix (a prefix of its own, not the whole bucket), got {uri!r}")
    return match.group(1), match.group(2)


def values(args: argparse.Namespace) -> dict[str, str]:
    filled = {"ACCOUNT_ID": args.account, "REGION": args.region, "NODE_ROLE": args.node_role}
    for name in PREFIXED:
        bucket, path = bucket_and_path(getattr(args, name))
        filled |= {f"{name.upper()}_BUCKET": bucket, f"{name.upper()}_PATH": path}
    return filled | {"KMS_KEY_ARN": args.kms_key_arn or ""}


def render(template: str, filled: dict[str, str], with_key: bool) -> dict:
    text = re.sub(r"\$\{(\w+)\}", lambda m: filled[m.group(1)], template)
    document = json.loads(text)
    if not with_key:
        document["Statement"] = [s for s in document["Statement"] if s.get("Sid") not in NEEDS_KEY]
    return document


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--account", required=True)
    parser.add_argument("--region", default="eu-west-3")
    parser.add_argument("--node-role", default="fruits-emr-nodes")
    for name in PREFIXED:
        parser.add_argument(f"--{name}", required=True, metavar="S3_URI")
    parser.add_argument("--kms-key-arn")
    args = parser.parse_args()
    filled = values(args)
    args.out.mkdir(parents=True, exist_ok=True)
    for template in sorted(TEMPLATES.glob("*.json")):
        if template.name == "bucket-policy.json":
            buckets = {filled[f"{name.upper()}_BUCKET"] for name in PREFIXED}
            for bucket in sorted(buckets):
                document = render(template.read_text(), filled | {"BUCKET": bucket}, bool(args.kms_key_arn))
                (args.out / f"bucket-policy-{bucket}.json").write_text(json.dumps(document, indent=2))
        else:
            document = render(template.read_text(), filled, bool(args.kms_key_arn))
            (args.out / template.name).write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
