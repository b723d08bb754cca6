#!/bin/bash
# Create the default EMR cluster for fruits_assets: 1 primary and 2 core m5.xlarge, in an EU region.
# Credentials come from the AWS CLI's standard chain (profile, SSO, environment); none are stored here.
#   ARTIFACTS  S3 prefix with the project's wheel and this folder's install-fruits.sh (required)
#   LOGS       S3 prefix for EMR's logs (required)
#   SUBNET     a private subnet of your VPC (required): EMR's managed security groups stay closed
#   REGION     default eu-west-3 (Paris), for GDPR
#   CORE_NODES default 2;  INSTANCE_TYPE default m5.xlarge
set -euo pipefail
: "${ARTIFACTS:?set ARTIFACTS=s3://bucket/prefix}" "${LOGS:?set LOGS=s3://bucket/emr-logs}" "${SUBNET:?set SUBNET=subnet-…}"
REGION="${REGION:-eu-west-3}"
INSTANCE_TYPE="${INSTANCE_TYPE:-m5.xlarge}"
here="$(cd "$(dirname "$0")" && pwd)"

aws emr create-cluster \
  --region "$REGION" \
  --name fruits-assets \
  --release-label "${RELEASE_LABEL:-emr-spark-8.0.0}" \
  --applications Name=Spark \
  --instance-groups \
    "InstanceGroupType=MASTER,InstanceCount=1,InstanceType=$INSTANCE_TYPE" \
    "InstanceGroupType=CORE,InstanceCount=${CORE_NODES:-2},InstanceType=$INSTANCE_TYPE" \
  --ec2-attributes "SubnetId=$SUBNET" \
  --use-default-roles \
  --bootstrap-actions "Path=$ARTIFACTS/install-fruits.sh,Name=install-fruits,Args=[$ARTIFACTS]" \
  --configurations "file://$here/configurations.json" \
  --log-uri "$LOGS" \
  --auto-termination-policy IdleTimeout=3600 \
  --query ClusterId --output text
