"""Score estimators against their closed forms and defining properties."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from i2i.metrics.estimators import (
    conditional_inception_score, frechet_distance, inception_score, kernel_distance, mode_coverage,
)


@pytest.mark.parametrize("k", [2, 5, 10])
def test_inception_score_of_one_hot_posteriors_spread_evenly_is_k(k: int):
    probs = torch.eye(k).repeat(3, 1)  # 3 images of each class, each classified with certainty
    assert inception_score(probs) == pytest.approx(k, rel=1e-9)


def test_inception_score_of_identical_posteriors_is_one():
    probs = torch.softmax(torch.randn(1, 7), 1).expand(50, 7)
    assert inception_score(probs) == pytest.approx(1.0, abs=1e-9)


def test_inception_score_lies_between_one_and_k():
    probs = torch.softmax(torch.randn(200, 6) * 3, 1)
    assert 1.0 < inception_score(probs) < 6.0


def test_conditional_inception_score_of_a_deterministic_generator_is_one():
    per_input = torch.softmax(torch.randn(20, 1, 8) * 4, -1)
    probs = per_input.expand(20, 10, 8)  # every output of an input is the same image
    assert conditional_inception_score(probs) == pytest.approx(1.0, abs=1e-9)


def test_conditional_inception_score_of_outputs_covering_k_classes_is_k():
    k = 4
    probs = torch.eye(k).repeat(3, 1).view(1, 3 * k, k).expand(5, 3 * k, k)  # each input reaches all k
    assert conditional_inception_score(probs) == pytest.approx(k, rel=1e-9)


def test_frechet_distance_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(500, 16))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_matches_the_gaussian_closed_form():
    rng = np.random.default_rng(1)
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 1.0])
    mu = np.array([1.0, -2.0, 0.5])
    a = rng.normal(size=(200_000, 3)) * np.sqrt(s1)
    b = rng.normal(size=(200_000, 3)) * np.sqrt(s2) + mu
    expected = (mu ** 2).sum() + ((np.sqrt(s1) - np.sqrt(s2)) ** 2).sum()
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.02)


def test_kernel_distance_is_unbiased_on_two_samples_of_one_distribution():
    rng = np.random.default_rng(2)
    # Many independent small pairs: a biased estimator (one keeping the diagonal) would average
    # visibly above zero at this sample size.
    estimates = [kernel_distance(rng.normal(size=(20, 8)), rng.normal(size=(20, 8)), subsets=1)[0]
                 for _ in range(400)]
    mean, stderr = np.mean(estimates), np.std(estimates) / np.sqrt(len(estimates))
    assert abs(mean) < 4 * stderr
    x, y = rng.normal(size=(20, 8)), rng.normal(size=(20, 8))
    d = 8
    kxx = (x @ x.T / d + 1) ** 3
    biased = kxx.mean() + ((y @ y.T / d + 1) ** 3).mean() - 2 * ((x @ y.T / d + 1) ** 3).mean()
    assert biased > 10 * stderr  # the diagonal alone makes the naive estimate clearly positive


def test_kernel_distance_separates_different_distributions():
    rng = np.random.default_rng(3)
    same = kernel_distance(rng.normal(size=(300, 8)), rng.normal(size=(300, 8)), subsets=20, subset_size=100)
    shifted = kernel_distance(rng.normal(size=(300, 8)), rng.normal(size=(300, 8)) + 1, subsets=20, subset_size=100)
    assert shifted[0] > 10 * max(abs(same[0]), same[1])


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match=r"posteriors \[N, K\]"):
        inception_score(torch.ones(2, 3, 4))
    with pytest.raises(ValueError, match=r"\[inputs, outputs, K\]"):
        conditional_inception_score(torch.ones(2, 3))


def test_mode_coverage_counts_the_distinct_classes_each_input_reaches():
    k = 4
    one_mode = torch.eye(k)[torch.tensor([2] * 6)].view(1, 6, k)  # every output classified as class 2
    all_modes = torch.eye(k).repeat(2, 1).view(1, 2 * k, k)
    two_modes = torch.eye(k)[torch.tensor([0, 3, 0, 3, 3, 0])].view(1, 6, k)
    assert mode_coverage(one_mode) == 1.0
    assert mode_coverage(all_modes) == k
    assert mode_coverage(torch.cat([one_mode, two_modes])) == 1.5  # averaged over inputs
    with pytest.raises(ValueError, match="inputs, outputs, K"):
        mode_coverage(one_mode[0])


def test_frechet_distance_of_a_small_set_with_itself_is_zero_in_high_dimension():
    """Fewer samples than dimensions (100 images, 2048 features): a rank-deficient covariance."""
    x = np.random.default_rng(2).normal(size=(12, 256)) ** 3
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(x, x[::-1] + 1.0) == pytest.approx(256.0, rel=1e-6)  # mean shift only
