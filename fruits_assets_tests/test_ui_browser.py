"""The Dagster UI in a real browser: materialize everything by clicking, then look at the PCA plot.

Starts `dagster dev` with the project's workspace.yaml on a free loopback port
and drives Debian's headless Chromium with Playwright. Screenshots are saved
under build/ui-screenshots/ (or FRUITS_SCREENSHOTS) for people to look at.
"""

import contextlib
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus

from .conftest import DAGSTER, free_port, start_server, stop_server, write_tree

PROJECT = Path(__file__).resolve().parents[1]
SCREENSHOTS = Path(os.environ.get("FRUITS_SCREENSHOTS", PROJECT / "build" / "ui-screenshots"))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RUN_TIMEOUT_S = 300


def _wait_until_up(url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dagster dev exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        message = "Debian's chromium is not installed (make setup installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    work = tmp_path_factory.mktemp("ui")
    colors = {"Kiwi 1": (120, 100, 40), "Lemon 1": (240, 220, 40)}
    write_tree(
        work / "images", {"Training/Kiwi 1": 6, "Training/Lemon 1": 6, "Test/Kiwi 1": 3, "Test/Lemon 1": 3}, colors
    )
    home = work / "dagster_home"
    home.mkdir()
    port = free_port()
    env = {**os.environ, "FRUITS_IMAGES": str(work / "images"), "FRUITS_STORAGE": str(work / "storage")}
    env["DAGSTER_HOME"] = str(home)
    command = [str(DAGSTER), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
    process = start_server(command, work / "dagster_dev.log", cwd=PROJECT, env=env)
    try:
        _wait_until_up(f"http://127.0.0.1:{port}/server_info", process, timeout=180)
        yield f"http://127.0.0.1:{port}", home
    finally:
        stop_server(process)


def _dismiss_community_dialog(page) -> None:
    """Dagster asks first-time visitors to join its community; the dialog covers the page until skipped."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    with contextlib.suppress(PlaywrightTimeout):
        page.get_by_role("button", name="Skip").click(timeout=10000)


def test_materialize_all_from_the_ui_and_see_the_pca_plot(dagster_ui):
    from playwright.sync_api import sync_playwright

    url, home = dagster_ui
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{url}/asset-groups", wait_until="networkidle")
        _dismiss_community_dialog(page)
        page.screenshot(path=SCREENSHOTS / "1-asset-graph.png")
        page.get_by_role("button", name="Materialize all").click()
        page.get_by_text("Launched run").or_(page.get_by_text("Launched 1 run")).first.wait_for(timeout=30000)

        deadline = time.monotonic() + RUN_TIMEOUT_S
        page.goto(f"{url}/runs", wait_until="networkidle")
        while "Success" not in page.inner_text("body"):
            assert "Failure" not in page.inner_text("body"), "the run launched from the UI failed"
            assert time.monotonic() < deadline, "the run launched from the UI did not finish in time"
            page.wait_for_timeout(3000)
            page.reload(wait_until="networkidle")
        page.screenshot(path=SCREENSHOTS / "2-run-succeeded.png")

        page.goto(f"{url}/assets/pca_model", wait_until="networkidle")
        page.locator("tr", has_text="explained_variance_plot").get_by_text("[Show Markdown]").click()
        plot = page.locator("img[src^='data:image/png']").first
        plot.wait_for(state="visible", timeout=15000)
        page.wait_for_timeout(1000)  # let the dialog finish fading in before the screenshot
        box = plot.bounding_box()
        page.screenshot(path=SCREENSHOTS / "3-pca-explained-variance.png")

        page.goto(f"{url}/assets/pca_model?view=checks", wait_until="networkidle")
        page.locator(":text('explained_variance_reaches_target'):visible").first.wait_for(timeout=15000)
        page.screenshot(path=SCREENSHOTS / "4-pca-model-checks.png")
        browser.close()

    assert box is not None and box["width"] > 200 and box["height"] > 100
    runs = DagsterInstance.from_config(str(home)).get_runs()
    assert [run.status for run in runs] == [DagsterRunStatus.SUCCESS]
    for name in ("1-asset-graph", "2-run-succeeded", "3-pca-explained-variance", "4-pca-model-checks"):
        assert (SCREENSHOTS / f"{name}.png").stat().st_size > 10_000
