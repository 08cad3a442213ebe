"""The score estimators, as pure functions of classifier posteriors or features.

- Inception Score (Salimans et al. 2016): IS = exp(E_x KL(p(y|x) || p(y))).
- Conditional Inception Score (Huang et al. 2018, MUNIT Sec. 5.1): for each input x1, p(y|x1)
  is the mean posterior over the outputs x2 generated from it;
  CIS = exp(E_x1 E_x2|x1 KL(p(y|x2) || p(y|x1))). A deterministic model has CIS = 1.
- Frechet distance (Heusel et al. 2017): |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)).
- Mode coverage: for each input, the number of distinct classes its outputs are assigned to
  (argmax of the posteriors), averaged over inputs; K when every input reaches all K modes.
- Kernel Inception Distance (Binkowski et al. 2018): the unbiased estimate of the squared MMD
  with the kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

EPS = 1e-12


def _kl_rows(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p_i || q_i) for each row of probabilities, in float64."""
    p, q = p.double(), q.double()
    return (p * (torch.log(p + EPS) - torch.log(q + EPS))).sum(-1)


def inception_score(probs: torch.Tensor) -> float:
    """``probs`` [N, K]: class posteriors of N generated images."""
    if probs.dim() != 2:
        raise ValueError(f"expected posteriors [N, K], got shape {tuple(probs.shape)}")
    marginal = probs.double().mean(0, keepdim=True)
    return float(torch.exp(_kl_rows(probs, marginal.expand_as(probs)).mean()))


def conditional_inception_score(probs: torch.Tensor) -> float:
    """``probs`` [N_inputs, M_outputs, K]: posteriors of M outputs generated from each input."""
    if probs.dim() != 3:
        raise ValueError(
            f"expected posteriors [inputs, outputs, K], got shape {tuple(probs.shape)}"
        )
    per_input = probs.double().mean(1, keepdim=True).expand_as(probs)
    return float(torch.exp(_kl_rows(probs, per_input).mean()))


def mode_coverage(probs: torch.Tensor) -> float:
    """``probs`` [N_inputs, M_outputs, K] -> mean number of distinct predicted classes per input."""
    if probs.dim() != 3:
        raise ValueError(
            f"expected posteriors [inputs, outputs, K], got shape {tuple(probs.shape)}"
        )
    hits = F.one_hot(probs.argmax(-1), probs.shape[-1]).amax(
        1
    )  # [N, K]: class reached by some output
    return float(hits.sum(1).double().mean())


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID-style distance between two feature sets [N, D] and [M, D] (float64)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    (n, d), m = a.shape, len(b)
    mu_a, mu_b = a.mean(0), b.mean(0)
    xa, xb = a - mu_a, b - mu_b  # centred: S_a = xa^T xa / (n - 1)
    if max(n, m) <= d:
        # Fewer samples than dimensions (100 images, 2048 features): the non-zero eigenvalues of
        # S_a S_b are the squared singular values of xa xb^T / sqrt((n-1)(m-1)), so
        # Tr((S_a S_b)^(1/2)) is their sum. Exact, and free of the D x D route's null-space
        # rounding noise, whose square roots add up to a visibly negative FID(x, x).
        cross = np.linalg.svd(xa @ xb.T, compute_uv=False).sum() / np.sqrt((n - 1) * (m - 1))
        tr_a, tr_b = (xa**2).sum() / (n - 1), (xb**2).sum() / (m - 1)
    else:
        # Tr((S_a S_b)^(1/2)) = Tr((R S_b R)^(1/2)) with R = S_a^(1/2): symmetric eigenproblems.
        s_a, s_b = xa.T @ xa / (n - 1), xb.T @ xb / (m - 1)
        w, v = np.linalg.eigh(s_a)
        root_a = (v * np.sqrt(w.clip(min=0))) @ v.T
        cross = np.sqrt(np.linalg.eigvalsh(root_a @ s_b @ root_a).clip(min=0)).sum()
        tr_a, tr_b = np.trace(s_a), np.trace(s_b)
    return float(((mu_a - mu_b) ** 2).sum() + tr_a + tr_b - 2 * cross)


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """KID's kernel k(x, y) = (x . y / d + 1)^3 between the rows of [N, D] and [M, D]."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def kernel_distance(
    a: np.ndarray, b: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID: mean and standard deviation over subsets of the unbiased squared MMD estimate."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n = min(len(a), len(b), subset_size)
    if n < 2:
        raise ValueError("KID needs at least two samples per set")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), n, replace=False)]
        y = b[rng.choice(len(b), n, replace=False)]
        kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
        off = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (n * (n - 1))
        values.append(off - 2 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))


class ResampledKernelDistance:
    """KID's unbiased squared MMD on draws with replacement of the two sets, for its bootstrap
    interval: the kernel matrices are computed once, and a pair of draws that are the same
    original image is left out as the diagonal is in the unbiased estimate. (Counting such
    pairs would add k(x, x) terms and bias every resample upwards, far past the estimate.)"""

    def __init__(self, a: np.ndarray, b: np.ndarray):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        self.kxx, self.kyy = polynomial_kernel(a, a), polynomial_kernel(b, b)
        self.kxy = polynomial_kernel(a, b)

    def __call__(self, i: np.ndarray, j: np.ndarray) -> float:
        distinct_i, distinct_j = i[:, None] != i[None, :], j[:, None] != j[None, :]
        if not distinct_i.any() or not distinct_j.any():
            return math.nan  # a draw of one image, over and over: no pair to compare
        within = (
            self.kxx[np.ix_(i, i)][distinct_i].mean() + self.kyy[np.ix_(j, j)][distinct_j].mean()
        )
        return float(within - 2 * self.kxy[np.ix_(i, j)].mean())
