"""Plots for the Dagster UI: matplotlib rendered to PNG, embedded in markdown metadata."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # no display: render to memory only
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def explained_variance_png(explained: Sequence[float], k: int, target: float | None) -> bytes:
    """Explained variance per component (bars) and cumulative (line), the chosen k marked."""
    shown = min(len(explained), max(2 * k, 20))
    ratios = np.asarray(explained[:shown], dtype=float)
    components = np.arange(1, shown + 1)
    figure, ax = plt.subplots(figsize=(7, 4))
    ax.bar(components, ratios, color="#9ecae1", label="per component")
    ax.plot(components, np.cumsum(ratios), color="#08519c", label="cumulative")
    ax.axvline(k, color="#d62728", linestyle="--", label=f"k = {k}")
    if target is not None:
        ax.axhline(target, color="#7f7f7f", linestyle=":", label=f"target {target:.0%}")
    ax.set(xlabel="principal component", ylabel="explained variance ratio", ylim=(0, 1.02))
    ax.set_title("PCA explained variance")
    ax.legend(loc="center right")
    return _png(figure)


def pc_scatter_png(pc1: Sequence[float], pc2: Sequence[float], labels: Sequence[str]) -> bytes:
    """The first two principal components, one colour per label."""
    labels = np.asarray(labels, dtype=object)
    figure, ax = plt.subplots(figsize=(7, 5))
    colours = plt.get_cmap("tab20")
    for i, label in enumerate(sorted(set(labels))):
        mask = labels == label
        ax.scatter(np.asarray(pc1)[mask], np.asarray(pc2)[mask], s=8, color=colours(i % 20), label=label)
    ax.set(xlabel="pc_1", ylabel="pc_2", title="Images on the first two principal components")
    ax.legend(fontsize="small", markerscale=2, bbox_to_anchor=(1.02, 1), loc="upper left")
    return _png(figure)


def markdown_image(png: bytes, alt: str) -> str:
    """Markdown that shows a PNG inline (Dagster renders data URIs in markdown metadata)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def confusion_matrix_png(confusion: np.ndarray, labels: Sequence[str]) -> bytes:
    """Test images by true class (rows) and predicted class (columns), counts written in each cell."""
    size = max(5.0, 0.45 * len(labels) + 2)
    figure, ax = plt.subplots(figsize=(size, size))
    ax.imshow(confusion, cmap="Blues")
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels, rotation=90, fontsize="small")
    ax.set_yticks(ticks, labels, fontsize="small")
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix on the test images")
    top = confusion.max() if confusion.size else 0
    for i, j in np.ndindex(confusion.shape):
        if confusion[i, j]:
            colour = "white" if confusion[i, j] > top / 2 else "black"
            ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize="x-small", color=colour)
    return _png(figure)


def open_set_png(folds: list[dict], scores: Sequence[str], floor: float) -> bytes:
    """For each score, the share of the left-out classes' photos answered `unknown`, fold by fold, and the floor."""
    figure, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(scores), 1)
    positions = np.arange(len(folds))
    for i, score in enumerate(scores):
        values = [fold["unknown"][score] for fold in folds]
        ax.bar(positions + i * width, values, width, label=score)
    ax.axhline(floor, color="#d62728", linestyle="--", label=f"floor {floor:.0%}")
    ax.set_xticks(
        positions + width * (len(scores) - 1) / 2, [", ".join(f["left_out"]) for f in folds], fontsize="small"
    )
    ax.set(ylabel="left-out photos answered unknown", ylim=(0, 1.02), title="Leave-classes-out: unknown fruits")
    ax.legend(fontsize="small", loc="lower right")
    return _png(figure)
