"""Square Attack, L∞ (Andriushchenko et al., ECCV 2020): score-based random search.

It queries only the true forward pass, so no gradient path can hide anything from it: the
cheapest test for gradient masking. Starting from vertical stripes of ±ε, each query moves one
random square window of the current best point to the vertices ±ε around the clean image
(one random sign per channel) and keeps it if the margin loss decreased. The window side
shrinks on the reference schedule (fraction p of the image, halved at fixed query counts,
rescaled to the query budget). Unlike the reference, every sample draws its own window
position, so its run does not depend on its batch. A sample stops once it is misclassified.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from robustsnn.attacks.core import check_eps, eval_mode, finalize, margin_loss
from robustsnn.attacks.seeding import sample_ids
from robustsnn.attacks.victim import Victim

SQUARE_LOSSES = ("margin", "ce")
# (query fraction of 10,000 above which p is divided by the factor)
_P_SCHEDULE = (
    (10, 2),
    (50, 4),
    (200, 8),
    (500, 16),
    (1000, 32),
    (2000, 64),
    (4000, 128),
    (6000, 256),
    (8000, 512),
)


def square_fraction(p_init: float, query: int, queries: int) -> float:
    """The fraction p of pixels a square covers at ``query`` (the reference schedule)."""
    it = int(query / max(queries, 1) * 10000)
    divisor = 1
    for bound, factor in _P_SCHEDULE:
        if it > bound:
            divisor = factor
    return p_init / divisor


def _as_image(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 4:
        return x
    if x.dim() == 3:
        return x.unsqueeze(1)
    if x.dim() == 2:
        return x.view(x.shape[0], 1, 1, x.shape[1])
    raise ValueError(f"Square needs inputs [B, C, H, W], [B, H, W] or [B, D]; got {x.shape}")


def square(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    queries: int = 5000,
    p_init: float = 0.8,
    loss: str = "margin",
    eot: int = 1,
    draws: int = 1,
    seed: int = 0,
    ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Square Attack (L∞) with ``queries`` queries per sample, margin (or CE) loss."""
    check_eps(eps)
    if queries < 1 or not 0 < p_init <= 1:
        raise ValueError(f"Square needs queries >= 1 and 0 < p_init <= 1, got {queries}, {p_init}")
    if loss not in SQUARE_LOSSES:
        raise ValueError(f"Square loss must be one of {', '.join(SQUARE_LOSSES)}; got {loss!r}")
    ids = sample_ids(ids, x.shape[0])
    victim = Victim(model, None, eot=eot, draws=draws, seed=seed, key="square")
    img = _as_image(x)
    _, c, h, w = img.shape

    def scores(z: torch.Tensor, rows: torch.Tensor, stream: str):
        logits = victim.logits(z.view(-1, *x.shape[1:]), ids[rows.cpu()], stream)
        margin = -margin_loss(logits, y[rows])
        value = margin if loss == "margin" else -F.cross_entropy(logits, y[rows], reduction="none")
        return margin, value

    all_rows = torch.arange(x.shape[0], device=x.device)
    stripes = victim.random.signs(ids, (c, 1, w), "init", x.device, x.dtype)
    best = (img + eps * stripes).clamp(0, 1)
    with eval_mode(model):
        margin, value = scores(best, all_rows, "init")
        rows_h = torch.arange(h, device=x.device)
        rows_w = torch.arange(w, device=x.device)
        for q in range(queries):
            rows = (margin > 0).nonzero().flatten()
            if rows.numel() == 0:
                break
            rid = ids[rows.cpu()]
            p = square_fraction(p_init, q, queries)
            side = min(max(int(round(math.sqrt(p * c * h * w / c))), 1), h, w)
            pos = victim.random.uniform(rid, (2,), f"q{q}:pos", x.device, x.dtype)
            top = (pos[:, 0] * (h - side + 1)).floor().long()
            left = (pos[:, 1] * (w - side + 1)).floor().long()
            in_h = (rows_h >= top[:, None]) & (rows_h < top[:, None] + side)
            in_w = (rows_w >= left[:, None]) & (rows_w < left[:, None] + side)
            window = (in_h[:, None, :, None] & in_w[:, None, None, :]).to(x.dtype)
            signs = victim.random.signs(rid, (c, 1, 1), f"q{q}:sign", x.device, x.dtype)
            clean = img[rows]
            candidate = best[rows] + window * (2 * eps) * signs
            candidate = torch.minimum(torch.maximum(candidate, clean - eps), clean + eps)
            candidate = candidate.clamp(0, 1)
            new_margin, new_value = scores(candidate, rows, f"q{q}")
            improved = new_value < value[rows]
            keep = improved.view(-1, 1, 1, 1)
            best[rows] = torch.where(keep, candidate, best[rows])
            value[rows] = torch.where(improved, new_value, value[rows])
            margin[rows] = torch.where(improved, new_margin, margin[rows])
    return finalize(best.view_as(x), x, eps, "linf")
