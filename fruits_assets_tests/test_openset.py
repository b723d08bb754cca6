"""Which fruit, or none: the open-set scores, the threshold fitted on held-out known photos, the AUROC."""

import numpy as np

from fruits_assets.vision.openset import (
    ClassGaussians,
    answered_unknown,
    auroc,
    known_scores,
    rule_thresholds,
    threshold,
)


def test_the_threshold_keeps_the_share_of_known_photos_with_its_confidence():
    rng = np.random.default_rng(0)
    kept = []
    for _ in range(400):  # calibration sets of 800 known scores from N(0, 1); the truth is Φ's tail above t
        cut = threshold(rng.normal(size=800), share=0.99)
        kept.append((rng.normal(size=20000) >= cut).mean())
    kept = np.array(kept)
    assert (kept >= 0.99).mean() >= 0.9  # 95% confidence, measured with a margin for 400 trials
    assert np.median(kept) < 0.998  # conservative, not everything: it still refuses the far tail


def test_the_threshold_of_a_tiny_calibration_set_refuses_nothing_it_saw():
    assert threshold(np.array([3.0, 1.0, 2.0]), share=0.99) == 1.0


def test_the_rule_keeps_the_share_together_and_either_score_makes_a_photo_unknown():
    rng = np.random.default_rng(2)
    calibration = {"msp": rng.normal(size=2000), "mahalanobis": rng.normal(size=2000)}
    cuts = rule_thresholds(calibration, share=0.99)
    assert set(cuts) == {"msp", "mahalanobis"}
    fresh = {"msp": rng.normal(size=50000), "mahalanobis": rng.normal(size=50000)}
    assert (~answered_unknown(fresh, cuts)).mean() >= 0.99  # each keeps 99.5%: together at least 99%
    low_msp = {"msp": np.array([cuts["msp"] - 1]), "mahalanobis": np.array([cuts["mahalanobis"] + 1])}
    low_distance = {"msp": np.array([cuts["msp"] + 1]), "mahalanobis": np.array([cuts["mahalanobis"] - 1])}
    assert answered_unknown(low_msp, cuts).all() and answered_unknown(low_distance, cuts).all()
    assert not answered_unknown({n: np.array([c + 1]) for n, c in cuts.items()}, cuts).any()


def test_auroc_is_the_chance_a_known_photo_scores_above_an_unknown_one():
    assert auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert auroc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 0.0
    assert auroc(np.array([1.0, 1.0]), np.array([1.0])) == 0.5  # ties count half


def test_the_classes_gaussians_from_their_moments_and_the_distances_are_mahalanobis():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(300, 4)) @ np.diag([1.0, 2.0, 0.5, 3.0])
    y = rng.integers(0, 3, size=300)
    z[y == 1] += 5
    counts = np.bincount(y).astype(float)
    sums = np.stack([z[y == c].sum(axis=0) for c in range(3)])
    gaussians = ClassGaussians.from_moments(counts, sums, z.T @ z)
    means = sums / counts[:, None]
    pooled = sum((z[y == c] - means[c]).T @ (z[y == c] - means[c]) for c in range(3)) / (300 - 3)
    np.testing.assert_allclose(np.linalg.inv(gaussians.precision), pooled, rtol=1e-4)
    naive = np.stack([np.einsum("ij,jk,ik->i", z - m, gaussians.precision, z - m) for m in means], axis=1)
    np.testing.assert_allclose(gaussians.distances(z), naive, rtol=1e-9, atol=1e-9)
    trailing = np.hstack([z, rng.normal(size=(300, 2)) * 1e3])  # components past the Gaussians' are not measured
    np.testing.assert_allclose(gaussians.distances(trailing), naive, rtol=1e-9, atol=1e-9)
    scores = known_scores(z, rng.normal(size=(300, 3)), gaussians)
    assert set(scores) == {"msp", "max_logit", "energy", "mahalanobis"}
    far = known_scores(np.full((1, 4), 50.0), np.zeros((1, 3)), gaussians)["mahalanobis"]
    assert far[0] < scores["mahalanobis"].min()  # far from every class: the least known of all
