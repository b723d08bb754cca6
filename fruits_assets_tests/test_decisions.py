"""Decide before starting: a step whose inputs are unchanged decides so from the Delta logs and its provenance, and
does nothing; a rerun with nothing new starts no JVM. And a storage root belongs to one images root."""

import os
import subprocess

import pytest

from .conftest import materialize_command, materialize_in_shell, write_tree

COLORS = {"Apple Red 1": (200, 20, 30), "Banana 1": (240, 220, 40)}


@pytest.fixture(scope="module")
def materialized(tmp_path_factory):
    work = tmp_path_factory.mktemp("decisions")
    root, storage = work / "images", work / "storage"
    write_tree(
        root, {"Training/Apple Red 1": 5, "Training/Banana 1": 5, "Test/Apple Red 1": 3, "Test/Banana 1": 3}, COLORS
    )
    env = {**os.environ, "FRUITS_IMAGES": str(root), "FRUITS_STORAGE": str(storage), "DAGSTER_HOME": str(work / "h")}
    materialize_in_shell(env)
    return env, work


def test_a_rerun_with_nothing_new_runs_every_step_without_a_jvm(materialized):
    env, _ = materialized
    # No Java anywhere: Spark could not start even if a step asked for it.
    path = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not os.path.exists(os.path.join(p, "java")))
    run = subprocess.run(
        materialize_command(),
        env=env | {"JAVA_HOME": "/nonexistent", "PATH": path},
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    # Six steps and the two freshness checks, each a step of its own.
    assert output.count("STEP_SUCCESS") == 8 and "JAVA_HOME" not in output
    assert "nothing to do: raw_images version" in output


def test_a_run_with_another_images_root_on_the_same_storage_is_refused_before_any_work(materialized):
    env, work = materialized
    other = work / "other images"
    write_tree(other, {"Test/Kiwi 1": 2}, {"Kiwi 1": (120, 100, 40)})
    run = subprocess.run(
        materialize_command(), env=env | {"FRUITS_IMAGES": str(other)}, capture_output=True, text=True, timeout=300
    )
    output = run.stdout + run.stderr
    assert run.returncode != 0 and "STEP_START" not in output
    assert f"holds the outputs of images root {env['FRUITS_IMAGES']}, not {other}" in output
