#!/bin/bash
# Create the default EMR cluster for fruits_assets: 1 primary and 2 core m5.xlarge, in an EU region, with
# the project's own least-privileged roles (never EMR's default roles, which reach every bucket of the
# account), EMRFS writing every object encrypted, and the nodes installed from a release on S3 only.
# Credentials come from the AWS CLI's standard chain (profile, SSO, environment); none are stored here.
#   RELEASE       S3 prefix of a release made by `make release` (required)
#   LOGS          S3 prefix for EMR's logs (required)
#   SUBNET        a private subnet of your VPC, with an S3 gateway endpoint (required); no internet needed
#   SERVICE_ROLE  default fruits-emr-service;  INSTANCE_PROFILE  default fruits-emr-nodes (see the runbook)
#   KMS_KEY_ID    a KMS key: EMRFS writes with SSE-KMS under it (else SSE-S3)
#   REGION        default eu-west-3 (Paris), for GDPR
#   CORE_NODES    default 2;  INSTANCE_TYPE default m5.xlarge;  RELEASE_LABEL default emr-spark-8.0.0
set -euo pipefail
: "${RELEASE:?set RELEASE=s3://bucket/releases/VERSION}" "${LOGS:?set LOGS=s3://bucket/emr-logs}" "${SUBNET:?set SUBNET=subnet-…}"
REGION="${REGION:-eu-west-3}"
INSTANCE_TYPE="${INSTANCE_TYPE:-m5.xlarge}"
here="$(cd "$(dirname "$0")" && pwd)"
configurations=$(mktemp)
trap 'rm -f "$configurations"' EXIT
python3 "$here/render_configurations.py" "${KMS_KEY_ID:-}" > "$configurations"

aws emr create-cluster \
  --region "$REGION" \
  --name fruits-assets \
  --tags project=fruits-assets \
  --release-label "${RELEASE_LABEL:-emr-spark-8.0.0}" \
  --applications Name=Spark \
  --instance-groups \
    "InstanceGroupType=MASTER,InstanceCount=1,InstanceType=$INSTANCE_TYPE" \
    "InstanceGroupType=CORE,InstanceCount=${CORE_NODES:-2},InstanceType=$INSTANCE_TYPE" \
  --service-role "${SERVICE_ROLE:-fruits-emr-service}" \
  --ec2-attributes "SubnetId=$SUBNET,InstanceProfile=${INSTANCE_PROFILE:-fruits-emr-nodes}" \
  --bootstrap-actions "Path=${RELEASE%/}/install-fruits.sh,Name=install-fruits,Args=[${RELEASE%/}]" \
  --configurations "file://$configurations" \
  --log-uri "$LOGS" \
  --auto-termination-policy IdleTimeout=3600 \
  --query ClusterId --output text
