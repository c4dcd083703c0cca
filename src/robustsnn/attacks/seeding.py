"""Random numbers fixed per sample, so that no result depends on batching or member order.

Every random draw of an attack (random starts, R-FGSM steps, Square's squares, Poisson
encodings for EOT) is addressed by ``(seed, key, stream, sample id)``: the seed of the
evaluation, the member's name, what the draw is for (``start0``, ``eot:r0:i3:k1``...) and the
sample's index in the evaluated set. Sample ids are grouped in fixed blocks of ``BLOCK``
consecutive ids; each block has its own generator, seeded by a hash of the address, and the
block's numbers are drawn in one call. So a sample gets the same numbers whatever batch it is
in, and the cost is one generator per block touched, not one per sample.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import torch

BLOCK = 64


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any printable parts (stable across runs and platforms)."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def sample_ids(ids: torch.Tensor | None, batch: int) -> torch.Tensor:
    """``ids`` as a CPU long tensor, or ``0..batch-1`` when the caller gave none."""
    if ids is None:
        return torch.arange(batch)
    ids = torch.as_tensor(ids, dtype=torch.long).cpu().flatten()
    if ids.numel() != batch:
        raise ValueError(f"got {ids.numel()} sample ids for a batch of {batch}")
    return ids


class SampleRandom:
    """Per-sample random numbers for one member: ``SampleRandom(seed, key)``.

    Methods return tensors of shape ``[len(ids), *shape]`` on ``device``.
    """

    def __init__(self, seed: int, key: str) -> None:
        self.seed = int(seed)
        self.key = str(key)

    def _draw(
        self,
        ids: torch.Tensor,
        shape: Sequence[int],
        stream: str,
        sampler: Callable[..., torch.Tensor],
        device: torch.device | str,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        ids = ids.cpu().long()
        shape = tuple(int(s) for s in shape)
        out = torch.empty((ids.numel(), *shape), dtype=dtype)
        blocks = torch.div(ids, BLOCK, rounding_mode="floor")
        for block in blocks.unique().tolist():
            gen = torch.Generator()
            gen.manual_seed(derive_seed(self.seed, self.key, stream, block))
            values = sampler((BLOCK, *shape), generator=gen, dtype=dtype)
            here = blocks == block
            out[here] = values[ids[here] - block * BLOCK]
        return out.to(device)

    def uniform(
        self,
        ids: torch.Tensor,
        shape: Sequence[int],
        stream: str,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """U[0, 1) numbers."""
        return self._draw(ids, shape, stream, torch.rand, device, dtype)

    def normal(
        self,
        ids: torch.Tensor,
        shape: Sequence[int],
        stream: str,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """N(0, 1) numbers."""
        return self._draw(ids, shape, stream, torch.randn, device, dtype)

    def signs(
        self,
        ids: torch.Tensor,
        shape: Sequence[int],
        stream: str,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Uniform ±1."""
        u = self.uniform(ids, shape, stream, device, dtype)
        return torch.where(u < 0.5, -torch.ones_like(u), torch.ones_like(u))
