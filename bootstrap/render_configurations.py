"""The cluster's configurations (configurations.json), with EMRFS's SSE-KMS key when one is given.

    python3 render_configurations.py [KMS_KEY_ID] > configurations.json

EMRFS writes every object with server-side encryption: SSE-S3 as configured, or
SSE-KMS under KMS_KEY_ID (the key `FRUITS_KMS_KEY_ID` names for the run). Standard
library only: it runs wherever the AWS CLI does.
"""

import json
import sys
from pathlib import Path

CONFIGURATIONS = Path(__file__).with_name("configurations.json")


def render(kms_key_id: str | None) -> list[dict]:
    configurations = json.loads(CONFIGURATIONS.read_text())
    if kms_key_id:
        emrfs = next(c for c in configurations if c["Classification"] == "emrfs-site")
        emrfs["Properties"]["fs.s3.serverSideEncryption.kms.keyId"] = kms_key_id
    return configurations


if __name__ == "__main__":
    json.dump(render(sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] else None), sys.stdout, indent=2)
