"""The Dagster UI in a real browser: materialize everything by clicking, then look at the PCA plot.

Starts `dg dev` (webserver and daemon) with the project's dagster.yaml on a free
loopback port: the sensor and the automation run the pipeline before anyone clicks.
Then drives Debian's headless Chromium with Playwright: Materialize all, the PCA
plot and checks, the Automation page, the sensor's ticks and the automation
conditions' evaluations. Screenshots are saved under build/ui-screenshots/ (or
FRUITS_SCREENSHOTS) for people to look at.
"""

import contextlib
import os
import shutil
from pathlib import Path

import pytest
from dagster import DagsterRunStatus

from .conftest import write_tree
from .daemon import dagster_dev, settled, wait_for, writing_runs

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


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory):
    """`dg dev` with the project's dagster.yaml: the sensor and the automation run the pipeline by themselves."""
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
    env = {"FRUITS_IMAGES": str(work / "images"), "FRUITS_STORAGE": str(work / "storage")}
    env |= {"FRUITS_SENSOR_SECONDS": "3", "FRUITS_AUTOMATION_SECONDS": "3"}
    with dagster_dev(work / "dagster_home", env, work / "dg_dev.log") as (url, instance):
        yield url, instance, work / "storage"


def _dismiss_community_dialog(page) -> None:
    """Dagster asks first-time visitors to join its community; the dialog covers the page until skipped."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    with contextlib.suppress(PlaywrightTimeout):
        page.get_by_role("button", name="Skip").click(timeout=10000)


def test_the_pipeline_runs_itself_then_materialize_all_from_the_ui_and_see_the_automation(dagster_ui):
    from playwright.sync_api import sync_playwright

    url, instance, storage = dagster_ui
    # Nobody clicks: the sensor's first tick reads the photos, the automation carries them to the phone's model.
    wait_for(
        "the pipeline to run by itself",
        lambda: settled(instance, 10) and (storage / "phone_model" / "current.json").exists(),
        timeout=RUN_TIMEOUT_S,
        every=2,
    )
    by_itself = len(writing_runs(instance))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{url}/asset-groups", wait_until="networkidle")
        _dismiss_community_dialog(page)
        page.screenshot(path=SCREENSHOTS / "1-asset-graph.png")
        page.get_by_role("button", name="Materialize all").click()
        page.get_by_text("Launched run").or_(page.get_by_text("Launched 1 run")).first.wait_for(timeout=30000)
        wait_for("the run launched from the UI", lambda: len(writing_runs(instance)) > by_itself, timeout=60)
        wait_for("it done", lambda: settled(instance, 10), timeout=RUN_TIMEOUT_S, every=2)
        page.goto(f"{url}/runs", wait_until="networkidle")
        page.get_by_text("Success").first.wait_for(timeout=30000)
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

        page.goto(f"{url}/automation", wait_until="networkidle")
        page.locator(":text('new_photos'):visible").first.wait_for(timeout=15000)
        page.locator(":text('fruits_automation'):visible").first.wait_for(timeout=15000)
        page.screenshot(path=SCREENSHOTS / "5-automation.png")

        page.locator("a", has_text="new_photos").first.click()  # the sensor's own page: its ticks
        page.wait_for_load_state("networkidle")
        page.locator(":text('0 runs requested'):visible").first.wait_for(timeout=30000)
        sensor_page = page.inner_text("body")
        page.screenshot(path=SCREENSHOTS / "6-sensor-ticks.png")
        # The ticks that requested a run (the first tick is pages back behind the ticks that found nothing new).
        page.goto(f"{page.url.split('?')[0]}?status=success", wait_until="networkidle")
        page.locator(":text('1 run requested'):visible").first.wait_for(timeout=30000)
        requested = page.inner_text("body")
        page.screenshot(path=SCREENSHOTS / "6-sensor-ticks-requested.png")

        page.goto(f"{url}/assets/pca_model?view=automation", wait_until="networkidle")
        page.locator(":text('Evaluation result'):visible").first.wait_for(timeout=30000)
        page.locator(":text('Not requested'):visible").first.wait_for(timeout=30000)
        evaluations = page.inner_text("body")
        page.screenshot(path=SCREENSHOTS / "7-automation-evaluations.png")
        browser.close()

    assert box is not None and box["width"] > 200 and box["height"] > 100
    # The sensor's ticks: the first requested the run that read the photos, the later ones found nothing new.
    assert "0 runs requested" in sensor_page and "1 run requested" in requested
    assert "Evaluation result" in evaluations  # pca_model's automation condition, evaluated tick by tick
    statuses = {run.status for run in instance.get_runs()}
    assert statuses == {DagsterRunStatus.SUCCESS}
    names = ["1-asset-graph", "2-run-succeeded", "3-pca-explained-variance", "4-pca-model-checks", "5-automation"]
    for name in [*names, "6-sensor-ticks", "6-sensor-ticks-requested", "7-automation-evaluations"]:
        assert (SCREENSHOTS / f"{name}.png").stat().st_size > 10_000
