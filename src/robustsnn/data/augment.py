"""Batched tensor augmentations (no torchvision): random crop with padding, flip, cutout."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from robustsnn.data.dataset import DatasetInfo

Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``padding`` and crop back to the original size at a random offset per sample."""
    if padding <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :]).to(x.device)
    cols = (dx[:, None] + torch.arange(w)[None, :]).to(x.device)
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def random_hflip(x: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Mirror each sample left-right with probability ``p``."""
    flip = (torch.rand(x.shape[0], generator=generator) < p).to(x.device)
    return torch.where(flip.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)


def cutout(
    x: torch.Tensor,
    size: int,
    generator: torch.Generator,
    fill: Sequence[float] | None = None,
) -> torch.Tensor:
    """One ``size``×``size`` hole per sample (centre uniform, clipped at the border)."""
    n, c, h, w = x.shape
    cy = torch.randint(0, h, (n,), generator=generator).to(x.device)
    cx = torch.randint(0, w, (n,), generator=generator).to(x.device)
    ys = torch.arange(h, device=x.device)[None, :]
    xs = torch.arange(w, device=x.device)[None, :]
    in_y = (ys >= (cy - size // 2)[:, None]) & (ys < (cy - size // 2 + size)[:, None])
    in_x = (xs >= (cx - size // 2)[:, None]) & (xs < (cx - size // 2 + size)[:, None])
    mask = (in_y[:, :, None] & in_x[:, None, :])[:, None]
    value = torch.zeros(1, c, 1, 1, device=x.device, dtype=x.dtype)
    if fill is not None:
        value = torch.tensor(list(fill), device=x.device, dtype=x.dtype).view(1, c, 1, 1)
    return torch.where(mask, value, x)


_NAMES = ("crop:PADDING", "flip", "cutout:SIZE")


def build_augmentation(spec: Sequence[str] | str | None, info: DatasetInfo) -> Augmentation | None:
    """Compose augmentations from names like ``crop:4``, ``flip``, ``cutout:8``."""
    if spec is None or spec == [] or spec == "":
        return None
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    steps: list[Augmentation] = []
    for item in items:
        name, _, arg = str(item).partition(":")
        try:
            if name == "crop":
                pad = int(arg or 4)
                steps.append(lambda x, g, pad=pad: random_crop(x, pad, g))
            elif name == "flip":
                steps.append(lambda x, g: random_hflip(x, g))
            elif name == "cutout":
                size = int(arg or 8)
                steps.append(lambda x, g, size=size: cutout(x, size, g, fill=info.mean))
            else:
                raise KeyError(name)
        except (KeyError, ValueError):
            raise ValueError(
                f"unknown augmentation '{item}'; accepted: {', '.join(_NAMES)}"
            ) from None
    if len(info.input_shape) != 3:
        raise ValueError(f"augmentations apply to static images, not {info.name}")

    def apply(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for step in steps:
            x = step(x, generator)
        return x

    return apply
