"""Batched tensor augmentations (no torchvision): random crop with padding, flip, cutout.

Each function takes a batch ``[N, C, H, W]`` (or event frames ``[N, T, C, H, W]``: one draw per
sample, shared by all its time steps) and a ``torch.Generator``; all random draws happen on the
CPU generator, so results are the same on every device. Specs such as ``["crop:4", "flip"]``
compose them (:func:`build_augmentation`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from robustsnn.data.dataset import Augmentation, DatasetInfo
from robustsnn.errors import DataError


def _check_batch(x: torch.Tensor, what: str) -> None:
    if x.dim() < 4:
        raise DataError(f"{what} needs a batch [N, C, H, W] or [N, T, C, H, W], got {x.shape}")


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``padding`` and crop back to the original size at a random offset per sample.

    Vectorised: one gather with per-sample row and column indices, no loop over samples.
    """
    _check_batch(x, "random_crop")
    if padding < 0:
        raise DataError(f"crop padding must be >= 0, got {padding}")
    if padding == 0:
        return x
    n, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    flat = x.reshape(n, -1, h, w)
    padded = F.pad(flat, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)[None, :]
    cols = dx[:, None] + torch.arange(w, device=x.device)[None, :]
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).reshape(x.shape)


def random_hflip(x: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Mirror each sample left-right with probability ``p``."""
    _check_batch(x, "random_hflip")
    if not 0.0 <= p <= 1.0:
        raise DataError(f"flip probability must be in [0, 1], got {p}")
    flip = (torch.rand(x.shape[0], generator=generator) < p).to(x.device)
    return torch.where(flip.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)


def cutout(
    x: torch.Tensor,
    size: int,
    generator: torch.Generator,
    fill: Sequence[float] | None = None,
) -> torch.Tensor:
    """One ``size`` x ``size`` hole per sample, centre uniform over the image, clipped at borders.

    The hole takes ``fill`` (one value per channel, e.g. the dataset mean, so that it normalises
    to 0), or 0 when ``fill`` is None.
    """
    _check_batch(x, "cutout")
    if size < 1:
        raise DataError(f"cutout size must be >= 1, got {size}")
    n, c, h, w = x.shape[0], x.shape[-3], x.shape[-2], x.shape[-1]
    cy = torch.randint(0, h, (n,), generator=generator).to(x.device)
    cx = torch.randint(0, w, (n,), generator=generator).to(x.device)
    top, left = cy - size // 2, cx - size // 2
    ys = torch.arange(h, device=x.device)[None, :]
    xs = torch.arange(w, device=x.device)[None, :]
    in_y = (ys >= top[:, None]) & (ys < (top + size)[:, None])
    in_x = (xs >= left[:, None]) & (xs < (left + size)[:, None])
    mask = (in_y[:, :, None] & in_x[:, None, :]).view(n, *([1] * (x.dim() - 3)), h, w)
    values = [0.0] if fill is None else [float(v) for v in fill]
    if len(values) not in (1, c):
        raise DataError(f"cutout fill needs 1 or {c} values (one per channel), got {len(values)}")
    value = torch.tensor(values, device=x.device, dtype=x.dtype).view(-1, 1, 1)
    return torch.where(mask, value, x)


ACCEPTED = ("crop[:PADDING=4]", "flip[:P=0.5]", "cutout[:SIZE=8]")


def _parse_step(item: str, info: DatasetInfo) -> Augmentation:
    name, _, arg = item.strip().partition(":")
    name = name.strip().lower()
    try:
        if name == "crop":
            padding = int(arg) if arg else 4
            if padding < 0:
                raise ValueError
            return lambda x, g: random_crop(x, padding, g)
        if name == "flip":
            p = float(arg) if arg else 0.5
            if not 0.0 <= p <= 1.0:
                raise ValueError
            return lambda x, g: random_hflip(x, g, p)
        if name == "cutout":
            size = int(arg) if arg else 8
            if size < 1:
                raise ValueError
            return lambda x, g: cutout(x, size, g, fill=info.mean)
    except ValueError:
        pass
    raise DataError(f"bad augmentation '{item}'; accepted: {', '.join(ACCEPTED)}")


def build_augmentation(spec: Sequence[str] | str | None, info: DatasetInfo) -> Augmentation | None:
    """Compose augmentations from names like ``crop:4``, ``flip``, ``cutout:8`` (in that order).

    ``spec`` is a list of names or one comma-separated string; None or empty gives None.
    Cutout fills its hole with ``info.mean``.
    """
    if spec is None:
        return None
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    items = [str(item) for item in items if str(item).strip()]
    if not items:
        return None
    steps = [_parse_step(item, info) for item in items]

    def apply(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for step in steps:
            x = step(x, generator)
        return x

    return apply


_DEFAULTS: dict[str, list[str]] = {
    "mnist5k": ["crop:2"],
    "mnist": ["crop:2"],
    "fashion_mnist": ["crop:2", "flip"],
    "digits": [],
    "cifar10": ["crop:4", "flip"],
    "cifar100": ["crop:4", "flip"],
    "svhn": ["crop:4", "flip"],
    "tiny_imagenet": ["crop:8", "flip"],
    "imagefolder": ["flip"],
    "cifar10_dvs": ["flip"],
}


def default_augmentation(name: str) -> list[str]:
    """The usual training augmentation for dataset ``name`` (SVHN keeps the flip, as in the
    robust-conversion paper's recipe)."""
    if name not in _DEFAULTS:
        raise DataError(f"unknown dataset '{name}'; known: {', '.join(_DEFAULTS)}")
    return list(_DEFAULTS[name])
