"""What the UI and the logs show: plots as embedded PNGs, progress lines while featurizing."""

import base64
import time

from fruits_assets.assets.plots import explained_variance_png, markdown_image, pc_scatter_png
from fruits_assets.spark.progress import progress_lines

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_plots_are_pngs_embedded_in_markdown():
    curve = explained_variance_png([0.5, 0.2, 0.1, 0.1, 0.05, 0.05], k=3, target=0.8)
    scatter = pc_scatter_png([0.0, 1.0, 2.0, 3.0], [1.0, 0.0, 1.0, 0.0], ["Kiwi 1", "Kiwi 1", "Lemon 1", "Lemon 1"])
    for png in (curve, scatter):
        assert png.startswith(PNG_SIGNATURE) and len(png) > 5_000
    markdown = markdown_image(curve, "curve")
    assert markdown.startswith("![curve](data:image/png;base64,")
    assert base64.b64decode(markdown[len("![curve](data:image/png;base64,") : -1]) == curve


def test_progress_lines_report_count_share_and_rate_until_done():
    lines: list[str] = []
    done = iter(range(0, 1000, 10))
    with progress_lines(lambda: next(done), total=200, log=lines.append, every=0.05):
        time.sleep(0.3)
    count = len(lines)
    time.sleep(0.15)
    assert len(lines) == count >= 3  # regular lines while the block runs, none after
    assert lines[0].startswith("read and featurized 0/200 files (0%)") and lines[1].startswith(
        "read and featurized 10/200 files (5%)"
    )
    assert "files/s" in lines[-1] and lines[-1].endswith("min left")  # a rate, then an estimate of the time left
