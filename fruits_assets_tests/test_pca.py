import pytest

from fruits_assets.spark.pca import choose_k


def test_choose_k_is_smallest_reaching_target():
    explained = [0.5, 0.3, 0.1, 0.05, 0.05]
    assert choose_k(explained, 0.5) == 1
    assert choose_k(explained, 0.8) == 2
    assert choose_k(explained, 0.85) == 3
    assert choose_k(explained, 0.9) == 3
    assert choose_k(explained, 1.0) == 5


def test_choose_k_rejects_a_target_outside_unit_interval():
    with pytest.raises(ValueError, match="variance target"):
        choose_k([1.0], 1.5)
