"""The import layers are enforced: a module importing upward fails the contract `make test` checks."""

import shutil
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml")],
        cwd=root,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_package_keeps_its_layers_and_an_upward_import_breaks_them(tmp_path):
    shutil.copytree(PROJECT / "fruits_assets", tmp_path / "fruits_assets", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT / "pyproject.toml", tmp_path)
    kept = _lint(tmp_path)
    assert kept.returncode == 0, kept.stdout[-2000:]

    paths = tmp_path / "fruits_assets" / "vision" / "paths.py"
    paths.write_text(paths.read_text() + "\nfrom fruits_assets.resources import locations  # noqa\n")
    broken = _lint(tmp_path)
    assert broken.returncode != 0
    assert "fruits_assets.vision.paths -> fruits_assets.resources.locations" in broken.stdout


def test_loading_the_definitions_freezes_what_the_imports_built():
    """What the imports built lives as long as the process: frozen, the garbage collector never walks it again,
    in a run or at the process's exit (0.6 s of every `dagster asset materialize` before)."""
    code = "import gc, fruits_assets.definitions; print('frozen', gc.get_freeze_count())"
    found = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert found.returncode == 0, found.stderr[-2000:]
    marker, frozen = found.stdout.strip().splitlines()[-1].split()
    assert marker == "frozen" and int(frozen) > 100_000
