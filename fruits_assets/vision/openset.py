"""Which fruit, or none: how far a photo is from every fruit the classifier learnt, and where `unknown` begins.

Four established open-set scores, each "higher means more like a known fruit", from
what the pipeline already has for a photo (its PCA features `z` and the classifier's
logits): the maximum softmax probability, the maximum logit, the energy
(log-sum-exp of the logits) and the Mahalanobis score, minus the smallest squared
Mahalanobis distance from `z` to a class mean under the classes' shared (pooled)
covariance, in the leading `DISTANCE_COMPONENTS` components of `z` only: the PCA is
fitted on every photo, and its trailing components hold variation that photos taken
apart from the training ones have and the training ones lack, where the known photos
would be as far as pictures with no fruit (measured: docs/phone.md).

The classifier's own confidence says which known fruit a photo looks most like; the
Mahalanobis score says whether it looks like any of them at all. Measured, neither
is enough alone: the softmax misses pictures with
no fruit, the Mahalanobis score misses some fruits close to a learnt one. The rule
the models apply (`CHOSEN`) is both: `unknown` when either is below its threshold.

Each threshold is fitted on held-out known photos: the lowest score that still keeps
its share of known photos answered, with 95% confidence (an order statistic chosen by
the binomial law), so that the share holds on photos the fit never saw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SCORES = ("msp", "max_logit", "energy", "mahalanobis")
RULE = ("msp", "mahalanobis")  # unknown when any of these is below its own threshold
CHOSEN = "msp_or_mahalanobis"  # the rule's name in the figures, beside the scores alone
DISTANCE_COMPONENTS = 30  # leading PCA components the Mahalanobis score measures in
CONFIDENCE = 0.95
RIDGE = 1e-6  # of the covariance's mean variance, added to its diagonal: a precision that always exists


@dataclass(frozen=True)
class ClassGaussians:
    """Each class's mean in the leading components of the PCA space and the classes' shared precision (inverse
    pooled covariance) there."""

    means: np.ndarray  # (classes, d)
    precision: np.ndarray  # (d, d)

    @classmethod
    def from_moments(cls, counts: np.ndarray, sums: np.ndarray, cross: np.ndarray) -> ClassGaussians:
        """From each class's count (C), sum of z (C, k) and sum of z zᵀ (k, k, summed over every class).

        A class with no training photo has no mean: it is left out (the score is the distance to the nearest class
        that has one, whichever it is)."""
        held = counts > 0
        counts, sums = counts[held], sums[held]
        n = counts.sum()
        means = sums / counts[:, None]
        within = cross - (sums.T / counts) @ sums  # Σ over classes of Σ (z - μ_c)(z - μ_c)ᵀ
        covariance = within / max(n - len(counts), 1)
        spread = np.trace(covariance) / len(covariance)
        covariance += RIDGE * (spread if spread > 0 else 1.0) * np.eye(len(covariance))  # one photo a class: 0
        return cls(means, np.linalg.inv((covariance + covariance.T) / 2))

    def distances(self, z: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of each row of `z` (its leading components) to each class mean."""
        z = z[:, : self.means.shape[1]]
        zp = z @ self.precision
        return (
            np.einsum("ij,ij->i", zp, z)[:, None]
            - 2 * zp @ self.means.T
            + np.einsum("ij,jk,ik->i", self.means, self.precision, self.means)[None, :]
        )


def known_scores(z: np.ndarray, logits: np.ndarray, gaussians: ClassGaussians) -> dict[str, np.ndarray]:
    """The four scores of each photo, higher meaning more like a known fruit."""
    top = logits.max(axis=1, keepdims=True)
    energy = (top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True)))[:, 0]
    return {
        "msp": np.exp(top[:, 0] - energy),
        "max_logit": top[:, 0],
        "energy": energy,
        "mahalanobis": -np.clip(gaussians.distances(z).min(axis=1), 0.0, None),
    }


def _binomial_tails(n: int, p: float) -> np.ndarray:
    """P(X ≥ r) for X ~ Binomial(n, p), for every r from 0 to n."""
    i = np.arange(n + 1)
    logs = (
        math.lgamma(n + 1)
        - np.array([math.lgamma(k + 1) + math.lgamma(n - k + 1) for k in i])
        + i * math.log(p)
        + (n - i) * math.log1p(-p)
    )
    pmf = np.exp(logs - logs.max())
    pmf /= pmf.sum()
    return np.clip(np.cumsum(pmf[::-1])[::-1], 0.0, 1.0)


def threshold(known: np.ndarray, share: float, confidence: float = CONFIDENCE) -> float:
    """The score below which a photo is `unknown`, from held-out known photos' scores: with `confidence`, at least
    `share` of known photos score above it.

    Rejecting the photos below the r-th lowest score, the share of known photos
    rejected is distributed as Beta(r, n + 1 - r), and it is at most 1 - `share` with
    probability P(Binomial(n, 1 - share) ≥ r): the largest r where that is at least
    `confidence` is taken.
    """
    scores = np.sort(np.asarray(known, dtype=float))
    n = len(scores)
    if n == 0:
        raise ValueError("no held-out known photos to fit the unknown threshold on")
    tails = _binomial_tails(n, 1 - share)
    held = np.flatnonzero(tails[1:] >= confidence)  # tails[r] for r = 1 … n
    rank = int(held[-1]) + 1 if held.size else 1
    return float(scores[rank - 1])


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """The probability that a known photo scores above an unknown one (ties count half): the ROC's area."""
    known, unknown = np.asarray(known, dtype=float), np.asarray(unknown, dtype=float)
    if not len(known) or not len(unknown):
        return float("nan")
    both = np.concatenate([known, unknown])
    order = both.argsort(kind="mergesort")
    ranks = np.empty(len(both))
    ranks[order] = np.arange(1, len(both) + 1)
    for value in np.unique(both):  # ties share their mean rank
        tied = both == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    above = ranks[: len(known)].sum() - len(known) * (len(known) + 1) / 2
    return float(above / (len(known) * len(unknown)))


def rule_thresholds(calibration: dict[str, np.ndarray], share: float) -> dict[str, float]:
    """The rule's thresholds: each score keeps 1 - (1 - share) / len(RULE) of known photos, so that together
    (a union bound) they keep at least `share`."""
    each = 1 - (1 - share) / len(RULE)
    return {name: threshold(calibration[name], each) for name in RULE}


def answered_unknown(scores: dict[str, np.ndarray], cuts: dict[str, float]) -> np.ndarray:
    """Whether each photo is `unknown`: any of the rule's scores below its threshold."""
    return np.logical_or.reduce([np.asarray(scores[name]) < cut for name, cut in cuts.items()])
