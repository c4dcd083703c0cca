"""Readers for users' copies of standard datasets, in their distribution layouts.

Nothing is downloaded. Each reader returns ``(images, labels)`` as numpy arrays, images uint8
``[N, C, H, W]`` (event frames: binary uint8 ``[N, T, C, H, W]``), and raises
FileNotFoundError or ValueError with a one-line message naming the expected files.
"""

from __future__ import annotations

import gzip
import pickle
import re
import struct
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from robustsnn.errors import DataError, NotFoundError


def _numpy_globals() -> dict[tuple[str, str], object]:
    """The only globals a CIFAR batch references: numpy's array and dtype reconstructors."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray

    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray}
    allowed[("numpy", "dtype")] = np.dtype
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "ndarray")] = np.ndarray
        allowed[(module, "dtype")] = np.dtype
    allowed[("_codecs", "encode")] = _latin1_encode
    return allowed


def _latin1_encode(text: object, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as a protocol-2 pickle written by Python 3 uses it for ``bytes``:
    a str encoded as latin-1, and nothing else (no other codec can be reached)."""
    if not isinstance(text, str) or encoding.lower().replace("_", "-") not in ("latin1", "latin-1"):
        raise UnsafePickleError(
            f"refusing _codecs.encode with {type(text).__name__} and encoding {encoding!r}"
        )
    return text.encode("latin-1")


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global outside the allowed set; nothing was executed."""


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays, nothing else: the CIFAR batch format.

    Any other global (a function or class that could run code on load) is refused, so a
    tampered file cannot execute anything.
    """

    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> object:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load '{module}.{name}' (only numpy arrays and plain containers "
                "are allowed)"
            ) from None


def load_cifar_batch(path: Path) -> dict[str, object]:
    """One CIFAR 'python version' batch as a dict with str keys, through the restricted
    unpickler."""
    try:
        with open(path, "rb") as f:
            data = RestrictedUnpickler(f, encoding="latin1").load()
    except UnsafePickleError as err:
        raise DataError(f"{path}: not a CIFAR batch, refused to unpickle it: {err}") from None
    except Exception as err:  # a malformed pickle can raise almost any type
        raise DataError(f"{path}: not a readable CIFAR batch ({err})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a CIFAR batch (expected a dict, found {type(data)})")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in data.items()}


def _first_dir_with(candidates: list[Path], names: list[str]) -> Path | None:
    for folder in candidates:
        if all((folder / name).is_file() for name in names):
            return folder
    return None


def read_cifar(root: Path, split: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10/100 'python version' pickle batches (``root`` may also be that folder itself)."""
    if num_classes == 10:
        folder_name, label_key = "cifar-10-batches-py", "labels"
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        layout = "{data_batch_1..5,test_batch}"
    else:
        folder_name, label_key = "cifar-100-python", "fine_labels"
        files = ["train"] if split == "train" else ["test"]
        layout = "{train,test}"
    folder = _first_dir_with([root / folder_name, root], files)
    if folder is None:
        raise NotFoundError(
            f"CIFAR-{num_classes} not found: expected {root / folder_name}/{layout} "
            "(the 'python version' from the CIFAR site)"
        )
    images, labels = [], []
    for path in (folder / f for f in files):
        batch = load_cifar_batch(path)
        if "data" not in batch or label_key not in batch:
            raise DataError(f"{path}: a CIFAR batch needs the keys 'data' and '{label_key}'")
        data = batch["data"]
        if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072:
            raise DataError(f"{path}: 'data' must be an N x 3072 uint8 array")
        if data.dtype != np.uint8:
            raise DataError(
                f"{path}: 'data' must hold uint8 pixels 0..255, found dtype {data.dtype} "
                "(values are not cast: 300 would silently become 44)"
            )
        label = np.asarray(batch[label_key])
        if label.shape != (data.shape[0],) or not np.issubdtype(label.dtype, np.integer):
            raise DataError(f"{path}: '{label_key}' must hold {data.shape[0]} integers")
        images.append(data.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32))
        labels.append(label.astype(np.int64))
    return np.concatenate(images), np.concatenate(labels)


def read_svhn(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """SVHN cropped digits ``{train,test}_32x32.mat`` (MATLAB v5; label 10 is digit 0)."""
    from scipy.io import loadmat

    name = f"{split}_32x32.mat"
    folder = _first_dir_with([root, root / "svhn", root / "SVHN"], [name])
    if folder is None:
        raise NotFoundError(
            f"SVHN not found: expected {root}/{{train,test}}_32x32.mat (cropped digits, format 2)"
        )
    path = folder / name
    try:
        mat = loadmat(path)
    except Exception as err:  # scipy raises several unrelated types for malformed files
        raise DataError(f"{path}: not a MATLAB v5 file ({type(err).__name__}: {err})") from None
    if "X" not in mat or "y" not in mat:
        raise DataError(f"{path}: an SVHN file needs the variables 'X' and 'y'")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != y.shape[0]:
        raise DataError(f"{path}: 'X' must be 32x32x3xN with N labels, got {x.shape}, {y.shape}")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() > 10):
        raise DataError(f"{path}: SVHN labels must be 1..10 (10 is digit 0)")
    y[y == 10] = 0
    return np.ascontiguousarray(x.astype(np.uint8, copy=False).transpose(3, 2, 0, 1)), y


_IDX_IMAGES, _IDX_LABELS = 2051, 2049


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """One IDX file (big-endian header, uint8 payload), raw or gzipped."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    header = 16 if magic == _IDX_IMAGES else 8
    found, count = struct.unpack(">II", raw[:8]) if len(raw) >= 8 else (None, 0)
    if found != magic:
        kind = "images" if magic == _IDX_IMAGES else "labels"
        raise DataError(f"{path}: IDX magic number {found}, expected {magic} ({kind})")
    if len(raw) < header:
        raise DataError(f"{path}: too short for an IDX file ({len(raw)} bytes)")
    data = np.frombuffer(raw, dtype=np.uint8, offset=header)
    if magic == _IDX_IMAGES:
        rows, cols = struct.unpack(">II", raw[8:16])
        if data.size != count * rows * cols:
            raise DataError(f"{path}: header says {count}x{rows}x{cols} pixels, found {data.size}")
        return data.reshape(count, 1, rows, cols).copy()
    if data.size != count:
        raise DataError(f"{path}: header says {count} labels, found {data.size}")
    return data.astype(np.int64)


def read_idx_dataset(root: Path, folder: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """MNIST / Fashion-MNIST IDX files: torchvision layout ``<folder>/raw/`` or flat in root."""
    prefix = "train" if split == "train" else "t10k"
    names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    for base in (root / folder / "raw", root / folder, root):
        found = [
            next((p for p in (base / n, base / f"{n}.gz") if p.is_file()), None) for n in names
        ]
        if all(found):
            images, labels = _read_idx(found[0], _IDX_IMAGES), _read_idx(found[1], _IDX_LABELS)
            if images.shape[0] != labels.shape[0]:
                raise DataError(f"{base}: {images.shape[0]} images but {labels.shape[0]} labels")
            return images, labels
    raise NotFoundError(
        f"{folder} not found: expected {root}/{folder}/raw/{{{names[0]},{names[1]}}}[.gz] "
        "(IDX files, as torchvision stores them; the files directly in the root work too)"
    )


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


MAX_IMAGE_PIXELS = 4096 * 4096
"""Images larger than this are refused before decoding (a small PNG can expand to gigabytes)."""


def _decode_image(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            width, height = img.size
            if width * height > MAX_IMAGE_PIXELS:
                raise DataError(
                    f"{path}: {width}x{height} pixels is more than the {MAX_IMAGE_PIXELS:,} "
                    "robustsnn decodes (a decompression bomb, or an image to shrink first)"
                )
            return np.array(img.convert("RGB"), dtype=np.uint8)
    except Image.DecompressionBombError as err:
        raise DataError(f"{path}: refused as a decompression bomb ({err})") from None
    except (OSError, SyntaxError, ValueError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path}: not a readable image ({err})") from None


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of one HWC uint8 image in torch (antialiased when shrinking)."""
    t = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    shrink = img.shape[0] > size or img.shape[1] > size
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
    return t[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def _class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _labelled_files(root: Path, split: str, classes: list[str]) -> list[tuple[Path, int]]:
    base = root / split
    index = {c: i for i, c in enumerate(classes)}
    annotations = base / "val_annotations.txt"
    if (base / "images").is_dir() and annotations.is_file():
        files = []
        for line in annotations.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) < 2 or parts[1] not in index:
                raise DataError(f"{annotations}: line '{line[:60]}' names no known class")
            files.append((base / "images" / parts[0], index[parts[1]]))
        return files
    files = []
    for c in _class_dirs(base):
        if c not in index:
            raise DataError(f"{base / c}: class '{c}' is not among the training classes")
        files += [
            (p, index[c])
            for p in sorted((base / c).rglob("*"))
            if p.suffix.lower() in _IMAGE_SUFFIXES and p.is_file()
        ]
    return files


def read_image_folder(
    root: Path, split: str, size: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """An ImageFolder tree ``root/<split>/<class>/*.png|jpg`` (Tiny-ImageNet's raw ``val`` too).

    Class indices follow the sorted class folders of ``root/train`` for every split, so a class
    missing from ``val`` does not shift the others. Images are resized to ``size`` x ``size``
    only when ``size`` is given; otherwise they must all have one size.
    """
    base = root / split
    if not base.is_dir():
        raise NotFoundError(
            f"image folder not found: expected {base}/<class>/<images> (.png, .jpg, .jpeg)"
        )
    train = root / "train"
    classes = _class_dirs(train if train.is_dir() else base)
    files = _labelled_files(root, split, classes)
    if not files:
        raise NotFoundError(f"no images found: expected {base}/<class>/<images>")
    images = []
    for path, _ in files:
        img = _decode_image(path)
        if size is not None and img.shape[:2] != (size, size):
            img = _resize(img, size)
        images.append(img)
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise DataError(f"{base}: images have different sizes {sorted(shapes)}; give a size")
    array = np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2))
    return array, np.array([label for _, label in files], dtype=np.int64), classes


DVS_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

_FRAMES_DIR = re.compile(r"frames_number_(\d+)_split_by_number")


def dvs_frame_folders(root: Path) -> dict[int, Path]:
    """SpikingJelly frame folders ``frames_number_{T}_split_by_number`` in ``root``, by T."""
    if not root.is_dir():
        return {}
    return {
        int(m.group(1)): p
        for p in root.iterdir()
        if p.is_dir() and (m := _FRAMES_DIR.fullmatch(p.name))
    }


def read_dvs_frames(
    folder: Path, time_steps: int, size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR10-DVS frames ``folder/<class>/*.npz`` as binary uint8 ``[N, T, 2, H, W]``.

    A frame is 1 where any event arrived. With ``size``, each frame is average-pooled to
    ``size`` x ``size`` in torch and thresholded at > 0 again.
    """
    classes = _class_dirs(folder)
    unknown = sorted(set(classes) - set(DVS_CLASSES))
    if unknown:
        raise DataError(
            f"{folder}: unknown class folders {unknown}; expected {', '.join(DVS_CLASSES)}"
        )
    frames, labels = [], []
    for c in classes:
        for path in sorted((folder / c).glob("*.npz")):
            try:
                with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:
                    array = np.asarray(f["frames"])
            except KeyError:
                raise DataError(f"{path}: expected an array named 'frames'") from None
            except (OSError, ValueError, EOFError, TypeError, zipfile.BadZipFile) as err:
                raise DataError(f"{path}: not a readable .npz file ({err})") from None
            if array.ndim != 4 or array.shape[:2] != (time_steps, 2):
                raise DataError(
                    f"{path}: 'frames' must be {time_steps} x 2 x H x W, got {array.shape}"
                )
            binary = torch.from_numpy(np.ascontiguousarray(array > 0))
            if size is not None and binary.shape[-2:] != (size, size):
                pooled = F.adaptive_avg_pool2d(binary.float(), (size, size))
                binary = pooled > 0
            frames.append(binary.to(torch.uint8).numpy())
            labels.append(DVS_CLASSES.index(c))
    if not frames:
        raise NotFoundError(f"no .npz frame files found: expected {folder}/<class>/*.npz")
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise DataError(f"{folder}: frames have different shapes {sorted(shapes)}")
    return np.stack(frames), np.array(labels, dtype=np.int64)
