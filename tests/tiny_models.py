"""Tiny 8x8 data with K = 4 planted patterns, and a tiny CiiV model trained on it in seconds, for
the audit tests."""

from __future__ import annotations

import torch

from ciiv.loss import view_cross_entropy
from ciiv.models import CiiVClassifier, create_model
from ciiv.sampling import RetinotopicSampler

K = 4


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n grey 1x8x8 images in [0, 1]: the pattern of their class, plus noise."""
    patterns = torch.rand(K, 1, 8, 8, generator=torch.Generator().manual_seed(123)).round()
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, K, (n,), generator=g)
    x = 0.5 + 0.15 * (2 * patterns[y] - 1) + 0.1 * torch.randn(n, 1, 8, 8, generator=g)
    return x.clamp(0, 1), y


def train_tiny_ciiv(samples_per_view: int, n: int, steps: int) -> CiiVClassifier:
    """A 3-view CiiV small_cnn (width 8), Adam for ``steps`` batches of 64 of n images."""
    torch.manual_seed(0)
    backbone = create_model("small_cnn", num_classes=K, in_channels=1, width=8)
    sampler = RetinotopicSampler(8, num_views=3, samples_per_view=samples_per_view, spike_scale=0.8)
    model = CiiVClassifier(backbone, sampler, [0.5], [0.25])
    x, y = make_data(n, seed=0)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    model.train()
    for step in range(steps):
        idx = torch.arange(step * 64, step * 64 + 64) % n
        loss = view_cross_entropy(model.forward_views(x[idx]).logits, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()
