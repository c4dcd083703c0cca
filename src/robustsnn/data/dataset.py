"""In-memory image datasets, seeded generators and a deterministic batch iterator.

Every dataset fits in memory as one tensor, so batching is plain indexing: no DataLoader workers,
and the order and augmentation of every batch follow from ``(seed, epoch, batch index)`` alone.
A run resumed at any epoch therefore sees exactly the batches the uninterrupted run would have.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from robustsnn.errors import DataError

Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset: shape, classes and normalisation.

    ``input_shape`` is ``(C, H, W)`` of one frame; event datasets also set ``time_steps`` (their
    samples are ``[T, C, H, W]``). ``mean``/``std`` are per channel, for the model's first layer.
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    description: str = ""
    embedded: bool = False
    time_steps: int | None = None


class ImageDataset(torch.utils.data.Dataset):
    """Images in [0, 1] (``[N, C, H, W]``, or ``[N, T, C, H, W]`` for event frames) and labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, info: DatasetInfo) -> None:
        if images.dim() not in (4, 5):
            raise DataError(f"images must be [N, C, H, W] or [N, T, C, H, W], got {images.shape}")
        if labels.dim() != 1 or images.shape[0] != labels.shape[0]:
            raise DataError(f"{images.shape[0]} images but labels of shape {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.long()
        self.info = info

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.images.shape[1:]))
        return f"ImageDataset({self.info.name}, {len(self)} samples of {shape})"

    def subset(self, indices: torch.Tensor | Sequence[int]) -> ImageDataset:
        """The samples at ``indices``, in that order."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ImageDataset(self.images[idx], self.labels[idx], self.info)

    def take(self, n: int) -> ImageDataset:
        """The first ``n`` samples (the splits are already shuffled, so this is a fair sample)."""
        if n < 1:
            raise DataError(f"cannot take {n} samples; give n >= 1")
        return ImageDataset(self.images[:n], self.labels[:n], self.info)


def derive_generator(*keys: object) -> torch.Generator:
    """A CPU generator seeded by a hash of ``keys``: distinct keys give independent streams."""
    digest = hashlib.blake2b(repr(keys).encode(), digest_size=8).digest()
    gen = torch.Generator()
    gen.manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))
    return gen


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A generator fixed by (seed, epoch, stream), so a resumed run replays the same draws.

    Stream 0 is the shuffling order of :func:`batches`; callers pick other streams for their own
    per-epoch randomness (attack noise, dropout seeds).
    """
    return derive_generator("epoch", int(seed), int(epoch), int(stream))


def augment_generator(seed: int, epoch: int, batch_index: int) -> torch.Generator:
    """The generator :func:`batches` hands to the augmentation of one batch."""
    return derive_generator("augment", int(seed), int(epoch), int(batch_index))


def batches(
    dataset: ImageDataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    augment: Augmentation | None = None,
    drop_last: bool = False,
    device: torch.device | str | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` batches; order and augmentation depend only on (seed, epoch, batch).

    Each yielded ``x`` is a fresh tensor, so in-place changes never reach the dataset. The
    augmentation runs after the move to ``device`` and draws from a CPU generator, so its result
    does not depend on the device.
    """
    if batch_size < 1:
        raise DataError(f"batch size must be >= 1, got {batch_size}")
    n = len(dataset)
    order = torch.randperm(n, generator=epoch_generator(seed, epoch)) if shuffle else None
    stop = n - n % batch_size if drop_last else n
    for index, start in enumerate(range(0, stop, batch_size)):
        end = min(start + batch_size, stop)
        if order is None:
            x, y = dataset.images[start:end].clone(), dataset.labels[start:end].clone()
        else:
            idx = order[start:end]
            x, y = dataset.images[idx], dataset.labels[idx]
        if device is not None:
            x, y = x.to(device), y.to(device)
        if augment is not None:
            x = augment(x, augment_generator(seed, epoch, index))
        yield x, y
