"""In-memory image datasets and a deterministic batch iterator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset: shape, classes and normalisation."""

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
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        self.images = images
        self.labels = labels.long()
        self.info = info

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    def subset(self, indices: torch.Tensor | list[int]) -> ImageDataset:
        """The samples at ``indices``, in that order."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ImageDataset(self.images[idx], self.labels[idx], self.info)

    def take(self, n: int) -> ImageDataset:
        """The first ``n`` samples (splits are already shuffled and stratified)."""
        if n < 1:
            raise ValueError(f"cannot take {n} samples")
        return ImageDataset(self.images[:n], self.labels[:n], self.info)


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A generator fixed by (seed, epoch, stream), so a resumed run replays the same draws."""
    gen = torch.Generator()
    gen.manual_seed((int(seed) * 1_000_003 + int(epoch) * 7919 + int(stream)) % (2**63))
    return gen


def batches(
    dataset: ImageDataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    drop_last: bool = False,
    device: torch.device | str | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` batches; the order and augmentation depend only on (seed, epoch)."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    n = len(dataset)
    order = torch.randperm(n, generator=epoch_generator(seed, epoch)) if shuffle else None
    aug_gen = epoch_generator(seed, epoch, stream=1)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = (
            order[start : start + batch_size]
            if order is not None
            else slice(start, start + batch_size)
        )
        x, y = dataset.images[idx], dataset.labels[idx]
        if augment is not None:
            x = augment(x, aug_gen)
        if device is not None:
            x, y = x.to(device), y.to(device)
        yield x, y
