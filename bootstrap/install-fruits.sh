#!/bin/bash
# EMR bootstrap action: runs on every node before Spark starts. Installs a release made by
# `make release` (bootstrap/release.py) from S3 only: no package index is reached, so a node in a
# private subnet with nothing but an S3 endpoint comes up. No credentials here: the node's instance
# role reads the release prefix (and only it, see bootstrap/iam/).
#   $1  the release's S3 prefix, e.g. s3://fruits-artifacts/releases/0.1.0
# Overrides, for a test outside EMR: FRUITS_PREFIX (default /opt/fruits), FRUITS_PYTHON (python3.11),
# FRUITS_SKIP_OS_PACKAGES=1 (the Python is there already), FRUITS_SUDO (default sudo).
set -euo pipefail
RELEASE="${1:?usage: install-fruits.sh s3://bucket/prefix-of-a-release}"
PREFIX="${FRUITS_PREFIX:-/opt/fruits}"
PYTHON="${FRUITS_PYTHON:-python3.11}"
SUDO="${FRUITS_SUDO-sudo}"

if [ -z "${FRUITS_SKIP_OS_PACKAGES:-}" ]; then
  $SUDO dnf install -y -q python3.11
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
aws s3 cp --recursive --only-show-errors "${RELEASE%/}/" "$work/"
# Every file as the release wrote it, or nothing is installed.
(cd "$work" && sha256sum --quiet --strict -c SHA256SUMS)
$SUDO "$PYTHON" -m venv "$PREFIX"
# The wheels are the whole, pinned set: no resolution, no index.
$SUDO env PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
  "$PREFIX/bin/pip" install --quiet --no-index --no-deps "$work"/wheels/*.whl
$SUDO mkdir -p "$PREFIX/share/fruits_assets"
$SUDO cp "$work"/model/* "$PREFIX/share/fruits_assets/"
# The node can build its engine: the model is the one this code expects.
$SUDO "$PREFIX/bin/python" -c "from fruits_assets.vision.engines import build_engine, engine_payload; build_engine('litert', engine_payload('litert'), 1)"
$SUDO chmod -R a+rX "$PREFIX"
