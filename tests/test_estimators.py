"""Score estimators against their closed forms and defining properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from i2i.metrics.estimators import (
    ResampledKernelDistance,
    conditional_inception_score,
    frechet_distance,
    inception_score,
    kernel_distance,
    mode_coverage,
)


@pytest.mark.parametrize("k", [2, 5, 10])
def test_inception_score_of_one_hot_posteriors_spread_evenly_is_k(k: int):
    probs = torch.eye(k).repeat(3, 1)  # 3 images of each class, each classified with certainty
    assert inception_score(probs) == pytest.approx(k, rel=1e-9)


def test_inception_score_of_identical_posteriors_is_one():
    probs = torch.softmax(torch.randn(1, 7), 1).expand(50, 7)
    assert inception_score(probs) == pytest.approx(1.0, abs=1e-9)


def test_inception_score_of_rows_that_differ_is_exp_of_the_mean_kl():
    """Worked by hand: the marginal of [1, 0] and [.5, .5] is [.75, .25]. exp(mean KL) is
    1.240806; the mean of exp(KL), a plausible slip, is 1.244017."""
    kl = [np.log(1 / 0.75), 0.5 * np.log(0.5 / 0.75) + 0.5 * np.log(0.5 / 0.25)]
    score = inception_score(torch.tensor([[1.0, 0.0], [0.5, 0.5]]))
    assert score == pytest.approx(np.exp(np.mean(kl)), rel=1e-9)
    assert score == pytest.approx(1.240806, abs=1e-6)


def test_conditional_inception_score_of_a_deterministic_generator_is_one():
    per_input = torch.softmax(torch.randn(20, 1, 8) * 4, -1)
    probs = per_input.expand(20, 10, 8)  # every output of an input is the same image
    assert conditional_inception_score(probs) == pytest.approx(1.0, abs=1e-9)


def test_conditional_inception_score_compares_each_output_with_its_own_inputs_mean():
    """Worked by hand. Input 1's outputs [1, 0] and [.5, .5] have mean [.75, .25]; input 2 is
    deterministic. CIS = exp of the mean of the four KLs (two of them 0): 1.113915. Comparing
    with the mean over all inputs instead would give 2.0 for the second case below."""
    kl = [np.log(1 / 0.75), 0.5 * np.log(0.5 / 0.75) + 0.5 * np.log(0.5 / 0.25), 0.0, 0.0]
    probs = torch.tensor([[[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [0.0, 1.0]]])
    assert conditional_inception_score(probs) == pytest.approx(np.exp(np.mean(kl)), rel=1e-9)
    assert conditional_inception_score(probs) == pytest.approx(1.113915, abs=1e-6)
    # Two deterministic inputs of different classes: no diversity within an input, CIS 1
    # (IS of the same outputs is 2).
    two = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])
    assert conditional_inception_score(two) == pytest.approx(1.0, abs=1e-9)
    assert inception_score(two.flatten(0, 1)) == pytest.approx(2.0, rel=1e-9)


def test_conditional_inception_score_of_outputs_covering_k_classes_is_k():
    k = 4
    probs = (
        torch.eye(k).repeat(3, 1).view(1, 3 * k, k).expand(5, 3 * k, k)
    )  # each input reaches all k
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
    expected = (mu**2).sum() + ((np.sqrt(s1) - np.sqrt(s2)) ** 2).sum()
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.02)


def test_kernel_distance_is_unbiased_on_two_samples_of_one_distribution():
    rng = np.random.default_rng(2)
    # Many independent small pairs: a biased estimator (one keeping the diagonal) would average
    # visibly above zero at this sample size.
    estimates = [
        kernel_distance(rng.normal(size=(20, 8)), rng.normal(size=(20, 8)), subsets=1)[0]
        for _ in range(400)
    ]
    mean, stderr = np.mean(estimates), np.std(estimates) / np.sqrt(len(estimates))
    assert abs(mean) < 4 * stderr
    x, y = rng.normal(size=(20, 8)), rng.normal(size=(20, 8))
    d = 8
    kxx = (x @ x.T / d + 1) ** 3
    biased = kxx.mean() + ((y @ y.T / d + 1) ** 3).mean() - 2 * ((x @ y.T / d + 1) ** 3).mean()
    assert biased > 10 * stderr  # the diagonal alone makes the naive estimate clearly positive


def test_kernel_distance_separates_different_distributions():
    rng = np.random.default_rng(3)
    same = kernel_distance(
        rng.normal(size=(300, 8)), rng.normal(size=(300, 8)), subsets=20, subset_size=100
    )
    shifted = kernel_distance(
        rng.normal(size=(300, 8)), rng.normal(size=(300, 8)) + 1, subsets=20, subset_size=100
    )
    assert shifted[0] > 10 * max(abs(same[0]), same[1])


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match=r"posteriors \[N, K\]"):
        inception_score(torch.ones(2, 3, 4))
    with pytest.raises(ValueError, match=r"\[inputs, outputs, K\]"):
        conditional_inception_score(torch.ones(2, 3))


def test_mode_coverage_counts_the_distinct_classes_each_input_reaches():
    k = 4
    one_mode = torch.eye(k)[torch.tensor([2] * 6)].view(
        1, 6, k
    )  # every output classified as class 2
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


@pytest.mark.parametrize("n, m, d", [(30, 50, 64), (50, 30, 64), (80, 120, 16)])
def test_frechet_distance_of_unequal_sets_matches_scipys_matrix_square_root(n, m, d):
    """pytorch-fid's route, worked out independently: np.cov and scipy.linalg.sqrtm of S_a S_b.
    (30, 50, 64) and (50, 30, 64) take the few-samples branch, (80, 120, 16) the other."""
    from scipy import linalg

    rng = np.random.default_rng(n + m)
    a = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.3
    b = rng.normal(size=(m, d)) * 1.5 + 0.2
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(s_a @ s_b).real
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s_a + s_b - 2 * root)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)


def test_kid_on_draws_with_replacement_leaves_out_pairs_of_one_image():
    """KID's bootstrap statistic: on the identity draw it is the unbiased estimate itself, by
    hand from the cubic kernel; on a draw with duplicates, a pair of copies of one image counts
    as the diagonal does (not at all), so the resamples centre on the estimate instead of far
    above it."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, (40, 16)), rng.normal(0.3, 1, (50, 16))
    stat = ResampledKernelDistance(a, b)
    k = lambda x, y: (x @ y.T / 16 + 1) ** 3  # noqa: E731
    by_hand = (
        (k(a, a).sum() - np.trace(k(a, a))) / (40 * 39)
        + (k(b, b).sum() - np.trace(k(b, b))) / (50 * 49)
        - 2 * k(a, b).mean()
    )
    assert stat(np.arange(40), np.arange(50)) == pytest.approx(by_hand, rel=1e-12)
    i, j = np.array([0, 0, 1, 2]), np.array([5, 6, 6, 7])
    x, y = a[i], b[j]
    keep_x = np.array([[p != q and i[p] != i[q] for q in range(4)] for p in range(4)])
    keep_y = np.array([[p != q and j[p] != j[q] for q in range(4)] for p in range(4)])
    expected = k(x, x)[keep_x].mean() + k(y, y)[keep_y].mean() - 2 * k(x, y).mean()
    assert stat(i, j) == pytest.approx(expected, rel=1e-12)
    draws = [stat(rng.integers(0, 40, 40), rng.integers(0, 50, 50)) for _ in range(200)]
    spread = np.std(draws)
    assert abs(np.mean(draws) - by_hand) < 0.5 * spread  # naive duplicates: many spreads above
