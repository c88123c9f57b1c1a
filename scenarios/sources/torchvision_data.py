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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scenarios.errors import DataError
from scenarios.modality import ModalitySpec
from scenarios.sources.base import SOURCES, SourceData, Split

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


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"root: {path}: not readable ({type(err).__name__}: {err})") from None
    if len(data) < 4 + 4 * ndim or data[0:2] != b"\x00\x00" or data[2] != 0x08 or data[3] != ndim:
        raise DataError(f"root: {path}: not an idx file of {ndim}-D unsigned bytes")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"root: {path}: holds {body.size} bytes of data, its header promises {int(np.prod(dims))}")
    return body.reshape(dims)


def _mnist(root: Path, key: str) -> tuple[Split, Split, tuple[int, ...]]:
    raw = root / _MNIST_FOLDERS[key] / "raw"
    splits = []
    for role in ("train", "test"):
        arrays = []
        for name, ndim in zip(_IDX[role], (3, 1)):
            path = next((p for p in (raw / name, raw / f"{name}.gz") if p.is_file()), None)
            if path is None:
                raise _missing(root, str(raw / name), layout(key, root))
            arrays.append(_read_idx(path, ndim))
        images, labels = arrays
        if len(images) != len(labels):
            raise DataError(f"root: {raw}: {len(images)} {role} images but {len(labels)} labels")
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


def _svhn(root: Path) -> tuple[Split, Split, tuple[int, ...]]:
    from scipy.io import loadmat

    splits = []
    for role in ("train", "test"):
        path = root / f"{role}_32x32.mat"
        if not path.is_file():
            raise _missing(root, str(path), layout("svhn", root))
        try:
            mat = loadmat(path)
            x, y = np.asarray(mat["X"], dtype=np.uint8), np.asarray(mat["y"], dtype=np.int64).reshape(-1)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DataError(f"root: {path}: not an SVHN .mat file ({type(err).__name__}: {err})") from None
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
