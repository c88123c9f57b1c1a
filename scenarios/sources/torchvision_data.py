"""The standard benchmarks from a local root in torchvision's on-disk layout; nothing is downloaded.

    mnist          root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte          (or .gz)
    fashion_mnist  root/FashionMNIST/raw/...   kmnist  root/KMNIST/raw/...               (same names)
    cifar10        root/cifar-10-batches-py/{data_batch_1..5,test_batch}
    cifar100       root/cifar-100-python/{train,test}
    svhn           root/{train,test}_32x32.mat

The same files that `torchvision.datasets.<Name>(root, download=False)` reads, parsed here directly:
torchvision's CIFAR and SVHN classes verify the MD5 sums of the official files and report any problem
as "Dataset not found or corrupted", while this names the missing or broken file. CIFAR pickles are
read with an unpickler that accepts only numpy arrays. Images are float32 [C, H, W] in [0, 1]."""

from __future__ import annotations

import gzip
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scenarios.errors import DataError
from scenarios.modality import ModalitySpec
from scenarios.sources.base import SOURCES, SourceData, Split, memory_bytes

_IDX = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"), "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_MNIST_FOLDERS = {"mnist": "MNIST", "fashionmnist": "FashionMNIST", "kmnist": "KMNIST"}
_CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
}
NAMES = ("mnist", "fashion_mnist", "kmnist", "cifar10", "cifar100", "svhn")


@dataclass
class TorchvisionParams:
    name: str = "???"  # mnist | fashion_mnist | kmnist | cifar10 | cifar100 | svhn (torchvision's class names work too)
    root: str = "???"  # the folder you would pass as torchvision's `root`
    modality: str = "image"  # the modality's name in the stream
    cifar100_labels: str = "fine"  # fine (100 classes) | coarse (20 superclasses)


def _canonical(name: str) -> str:
    key = name.lower().replace("_", "").replace("-", "")
    if key not in {n.replace("_", "") for n in NAMES}:
        raise DataError(f"name: unknown dataset '{name}'; choose from {', '.join(NAMES)}")
    return key


def layout(key: str, root: Path) -> str:
    """Which files go where, for the one-line error about a missing file or root."""
    if key in _MNIST_FOLDERS:
        every = ", ".join(n for pair in _IDX.values() for n in pair)
        return f"put {every} (or their .gz) in {root / _MNIST_FOLDERS[key] / 'raw'}"
    if key in _CIFAR:
        folder, train_files, test_files, url = _CIFAR[key]
        return f"put {', '.join(train_files + test_files)} in {root / folder} (extract {url} into {root})"
    return f"put train_32x32.mat and test_32x32.mat in {root} (from ufldl.stanford.edu/housenumbers)"


def _missing(root: Path, where: str, hint: str) -> DataError:
    return DataError(f"root: {where} not found under {root}: {hint}")


def _read_idx(path: Path, ndim: int, n: int | None = None) -> np.ndarray:
    """An idx file (or its .gz) of `ndim`-D unsigned bytes, streamed: its header is checked first (images
    must be 28x28, and as many as the labels, `n`), then exactly the bytes it promises are read. A .gz
    that inflates beyond that (a bomb) is refused after one more byte, never inflated whole."""
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as fh:
            head = fh.read(4 + 4 * ndim)
            if len(head) < 4 + 4 * ndim or head[0:2] != b"\x00\x00" or head[2] != 0x08 or head[3] != ndim:
                raise DataError(f"root: {path}: not an idx file of {ndim}-D unsigned bytes")
            dims = [int.from_bytes(head[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
            if ndim == 3 and dims[1:] != [28, 28]:
                raise DataError(f"root: {path}: holds images of {dims[1]}x{dims[2]} pixels; this dataset's are 28x28")
            if n is not None and dims[0] != n:
                raise DataError(f"root: {path}: its header promises {dims[0]} images for {n} labels")
            size = int(np.prod(dims))
            budget = memory_bytes()
            if budget is not None and size > budget:
                raise DataError(f"root: {path}: its header promises {size:,} bytes, more than this machine's memory")
            body = _read_exactly(fh, size)
            if len(body) < size:
                raise DataError(f"root: {path}: holds {len(body)} bytes of data, its header promises {size}")
            if fh.read(1):
                raise DataError(f"root: {path}: holds more data than the {size:,} bytes its header promises; the file is damaged")
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise DataError(f"root: {path}: not readable ({type(err).__name__}: {err})") from None
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _read_exactly(fh: Any, size: int) -> bytes:
    """Up to `size` bytes, in blocks: a header that lies about its size allocates only what is there."""
    parts, got = [], 0
    while got < size:
        block = fh.read(min(1 << 24, size - got))
        if not block:
            break
        parts.append(block)
        got += len(block)
    return b"".join(parts)


def _mnist(root: Path, key: str) -> tuple[Split, Split, tuple[int, ...]]:
    raw = root / _MNIST_FOLDERS[key] / "raw"
    splits = []
    for role in ("train", "test"):
        paths = []
        for name in _IDX[role]:
            path = next((p for p in (raw / name, raw / f"{name}.gz") if p.is_file()), None)
            if path is None:
                raise _missing(root, str(raw / name), layout(key, root))
            paths.append(path)
        labels = _read_idx(paths[1], 1)  # first: the number of images must match it
        images = _read_idx(paths[0], 3, len(labels))
        splits.append(Split({"image": (images[:, None] / np.float32(255.0)).astype(np.float32)}, labels.astype(np.int64)))
    return splits[0], splits[1], (1, 28, 28)


class _NumpyOnly(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays, nothing else (a data file cannot run code)."""

    ALLOWED = frozenset({("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer"),
               ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")})  # Python 3 pickles of bytes

    def find_class(self, module: str, name: str):  # type: ignore[override]
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as fh:
            entry = _NumpyOnly(fh, encoding="latin1").load()
        entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
        data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(entry[label_key], dtype=np.int64)
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, KeyError, ValueError, TypeError) as err:
        raise DataError(f"root: {path}: not a CIFAR batch ({type(err).__name__}: {err})") from None
    if len(data) != len(labels):
        raise DataError(f"root: {path}: {len(data)} images but {len(labels)} labels")
    return data, labels


def _cifar(root: Path, key: str, cifar100_labels: str) -> tuple[Split, Split, tuple[int, ...]]:
    folder, train_files, test_files, _url = _CIFAR[key]
    label_key = "labels" if key == "cifar10" else f"{cifar100_labels}_labels"
    if key == "cifar100" and cifar100_labels not in ("fine", "coarse"):
        raise DataError(f"cifar100_labels: must be fine or coarse, got '{cifar100_labels}'")
    for f in train_files + test_files:
        if not (root / folder / f).is_file():
            raise _missing(root, str(root / folder / f), layout(key, root))
    splits = []
    for files in (train_files, test_files):
        parts = [_cifar_batch(root / folder / f, label_key) for f in files]
        images = np.concatenate([p[0] for p in parts]) / np.float32(255.0)
        splits.append(Split({"image": images.astype(np.float32)}, np.concatenate([p[1] for p in parts])))
    return splits[0], splits[1], (3, 32, 32)


def _check_mat(path: Path) -> None:
    """SVHN's files are MATLAB v5 with X (32, 32, 3, N) and y (N, 1): other versions, and shapes that would
    need more memory than the machine has, are refused from the headers, before any data is read."""
    from scipy.io import whosmat

    with open(path, "rb") as fh:
        head = fh.read(128)
    if head.startswith(b"MATLAB 7.3") or head[:8] == b"\x89HDF\r\n\x1a\n":
        raise DataError(f"root: {path}: a MATLAB v7.3 (HDF5) file; SVHN's files are MATLAB v5, as "
                        f"ufldl.stanford.edu/housenumbers gives them (or save with `save -v7`)")
    try:
        shapes = {name: shape for name, shape, _ in whosmat(path)}
    except Exception as err:
        raise DataError(f"root: {path}: not an SVHN .mat file ({type(err).__name__}: {_first(err)})") from None
    x = shapes.get("X")
    if x is None or "y" not in shapes:
        raise DataError(f"root: {path}: holds {sorted(shapes)}, not SVHN's X and y")
    budget = memory_bytes()
    if len(x) == 4 and budget is not None and int(np.prod(x)) > budget:
        raise DataError(f"root: {path}: X declares shape {tuple(x)}, more than this machine's memory")


def _first(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def _svhn(root: Path) -> tuple[Split, Split, tuple[int, ...]]:
    from scipy.io import loadmat

    splits = []
    for role in ("train", "test"):
        path = root / f"{role}_32x32.mat"
        if not path.is_file():
            raise _missing(root, str(path), layout("svhn", root))
        _check_mat(path)
        try:
            mat = loadmat(path)
            x, y = np.asarray(mat["X"], dtype=np.uint8), np.asarray(mat["y"], dtype=np.int64).reshape(-1)
        except Exception as err:  # scipy's readers fail in their own ways (MatReadError, ValueError, ...)
            raise DataError(f"root: {path}: not an SVHN .mat file ({type(err).__name__}: {_first(err)})") from None
        if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
            raise DataError(f"root: {path}: X has shape {x.shape}, expected (32, 32, 3, {len(y)})")
        y = np.where(y == 10, 0, y)  # the files label digit 0 as 10, as torchvision maps it
        images = x.transpose(3, 2, 0, 1) / np.float32(255.0)  # (N, 3, 32, 32)
        splits.append(Split({"image": images.astype(np.float32)}, y))
    return splits[0], splits[1], (3, 32, 32)


@SOURCES.register("torchvision", params=TorchvisionParams)
def torchvision_source(params: TorchvisionParams, seed: int) -> SourceData:
    """MNIST, FashionMNIST, KMNIST, CIFAR-10/100, SVHN from a local root in torchvision's layout."""
    key = _canonical(params.name)
    root = Path(params.root).expanduser()
    if not root.is_dir():
        raise DataError(f"root: folder not found: {root}; {layout(key, root)}")
    if key in _MNIST_FOLDERS:
        train, test, shape = _mnist(root, key)
    elif key in _CIFAR:
        train, test, shape = _cifar(root, key, params.cifar100_labels)
    else:
        train, test, shape = _svhn(root)
    for split, role in ((train, "train"), (test, "test")):
        if len(split) == 0:
            raise DataError(f"root: {root}: the {role} split of {params.name} is empty")
        split.inputs = {params.modality: split.inputs.pop("image")}
    return SourceData(train, test, {params.modality: ModalitySpec("image", shape)})
