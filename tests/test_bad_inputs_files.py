"""Bad-input battery, users' files family: folders of images and audio, tables, saved `datasets`
folders, torchvision's on-disk layouts and sources paired by label, each damaged, lying or ambiguous the
way a user's own files can be. Each goes through the real CLI (`validate`, then `run`): exit code 2, one
line naming the key, the file and the row or sample where there is one, nothing written, the earlier run
byte-identical. Inputs that used to be read silently wrong and are now read right (a `1.0` among
integer labels, a constant feature column) are checked by what they give."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import datafiles as D
from battery import Earlier, one_line_error, user_source, write_config
from lifelong_moe.cli import main

KEY = "stream.sources.mine.params"


@pytest.fixture(scope="module")
def stock(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Pristine files each case copies before damaging its copy."""
    root = tmp_path_factory.mktemp("stock")
    D.image_folder(root / "img")
    D.audio_folder(root / "aud")
    D.csv_table(root / "t.csv")
    D.hf_dataset(root / "ds")
    D.mnist(root / "mn")
    D.svhn(root / "sv")
    D.hf_text_model(root / "bert")
    return root


def copy(stock: Path, name: str, tmp: Path) -> Path:
    src, dst = stock / name, tmp / name
    shutil.copytree(src, dst) if src.is_dir() else shutil.copy(src, dst)
    return dst


# ---- folders of images ---------------------------------------------------------------------------

def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels and holds none: Pillow's size check reads only this."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk)) + \
        struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))


def images(damage: Callable[[Path], None] = lambda root: None, **params: Any) -> Callable[[Any], Callable[[Path], dict[str, Any]]]:
    def make(stock: Path) -> Callable[[Path], dict[str, Any]]:
        def source(tmp: Path) -> dict[str, Any]:
            root = copy(stock, "img", tmp)
            damage(root)
            return {"kind": "image_folder", "params": {"root": str(root), "size": [16, 16], **params}}
        return source
    return make


def numbered_folders(*names: str) -> Callable[[Any], Callable[[Path], dict[str, Any]]]:
    """Images in class folders of these names (in root/ or, for 'train/x', 'test/x', in split folders)."""
    def make(stock: Path) -> Callable[[Path], dict[str, Any]]:
        def source(tmp: Path) -> dict[str, Any]:
            root = tmp / "num"
            for name in names:
                D.image_folder(root / Path(name).parent, n_per_class=3, classes=(Path(name).name,))
            return {"kind": "image_folder", "params": {"root": str(root), "size": [8, 8]}}
        return source
    return make


def index_with(label: str, edit: Callable[[list[str]], list[str]] = lambda rows: rows) -> Callable[[Any], Callable[[Path], dict[str, Any]]]:
    """An index CSV of the stock images, `label` in its row 6, its lines then edited."""
    def make(stock: Path) -> Callable[[Path], dict[str, Any]]:
        def source(tmp: Path) -> dict[str, Any]:
            root = copy(stock, "img", tmp)
            files = sorted(root.rglob("*.png"))
            rows = ["path,label"] + [f"{p.relative_to(root)},{label if i == 4 else p.parent.name}" for i, p in enumerate(files)]
            (root / "index.csv").write_text("\n".join(edit(rows)) + "\n")
            return {"kind": "image_folder", "params": {"index": str(root / "index.csv"), "size": [8, 8]}}
        return source
    return make


def _write(rel: str, data: bytes) -> Callable[[Path], None]:
    return lambda root: (root / rel).write_bytes(data)


def _halve(rel: str) -> Callable[[Path], None]:
    return lambda root: (root / rel).write_bytes((root / rel).read_bytes()[: (root / rel).stat().st_size // 2])


# ---- folders of audio ----------------------------------------------------------------------------

def audio(damage: Callable[[Path], None] = lambda root: None, **params: Any) -> Callable[[Any], Callable[[Path], dict[str, Any]]]:
    def make(stock: Path) -> Callable[[Path], dict[str, Any]]:
        def source(tmp: Path) -> dict[str, Any]:
            root = copy(stock, "aud", tmp)
            damage(root)
            return {"kind": "audio_folder", "params": {"root": str(root), "sample_rate": 8000, **params}}
        return source
    return make


def _wav_rate(rel: str, rate: int) -> Callable[[Path], None]:
    """The WAV's header claims `rate` samples per second (bytes 24..27 of the canonical header)."""
    def damage(root: Path) -> None:
        data = bytearray((root / rel).read_bytes())
        assert data[12:16] == b"fmt "
        data[24:28] = struct.pack("<I", rate)
        (root / rel).write_bytes(bytes(data))
    return damage


def _float_wav(rel: str, value: float) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        import soundfile as sf

        sf.write(root / rel, np.full(800, value, np.float32), 8000, subtype="FLOAT")
    return damage


# ---- tables --------------------------------------------------------------------------------------

def table(edit: Callable[[list[str]], list[str]] = lambda rows: rows, **params: Any) -> Callable[[Any], Callable[[Path], dict[str, Any]]]:
    """The stock CSV (id,height,weight,note,label) with its lines edited, read with `params`."""
    def make(stock: Path) -> Callable[[Path], dict[str, Any]]:
        def source(tmp: Path) -> dict[str, Any]:
            path = tmp / "t.csv"
            path.write_text("\n".join(edit((stock / "t.csv").read_text().splitlines())) + "\n")
            return {"kind": "csv", "params": {"path": str(path), "text": ["note"], "ignore": ["id"], **params}}
        return source
    return make


def label_at(line: int, value: str) -> Callable[[list[str]], list[str]]:
    def edit(rows: list[str]) -> list[str]:
        rows[line - 1] = rows[line - 1].rsplit(",", 1)[0] + "," + value
        return rows
    return edit


def header(text: str) -> Callable[[list[str]], list[str]]:
    return lambda rows: [text, *rows[1:]]


def hf_tokenizer(change: Callable[[Path], str]) -> Callable[[Any], Callable[[Path], dict[str, Any]]]:
    def make(stock: Path) -> Callable[[Path], dict[str, Any]]:
        def source(tmp: Path) -> dict[str, Any]:
            folder = copy(stock, "bert", tmp)
            return {"kind": "csv", "params": {"path": str(stock / "t.csv"), "text": ["note"], "ignore": ["id"],
                                              "tokenizer": {"kind": "hf", "path": change(folder), "max_length": 12}}}
        return source
    return make


def _tokenizer_asks_for_code(folder: Path) -> str:
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": ["someone/repo--tokenization_x.XTokenizer", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return str(folder)


# ---- saved datasets ------------------------------------------------------------------------------

MEDIA = {"image": {"column": "img", "kind": "image"}, "audio": {"column": "speech", "kind": "audio"}}


def dataset(damage: Callable[[Path], None] = lambda root: None, columns: dict[str, Any] | None = None,
            folder: str = "ds") -> Callable[[Any], Callable[[Path], dict[str, Any]]]:
    def make(stock: Path) -> Callable[[Path], dict[str, Any]]:
        def source(tmp: Path) -> dict[str, Any]:
            root = copy(stock, folder, tmp) if (stock / folder).exists() else tmp / folder
            damage(root)
            return {"kind": "hf_dataset", "params": {"path": str(root), "columns": columns or MEDIA, "audio": {"sample_rate": 8000},
                                                     "image": {"size": [8, 8]}}}
        return source
    return make


def _state(root: Path, filename: str) -> None:
    state = json.loads((root / "train" / "state.json").read_text())
    arrow = root / "train" / state["_data_files"][0]["filename"]
    shutil.move(arrow, root.parent / "outside.arrow")
    state["_data_files"][0]["filename"] = filename.format(outside=root.parent / "outside.arrow")
    (root / "train" / "state.json").write_text(json.dumps(state))


def _arrow(change: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        arrow = next((root / "train").glob("*.arrow"))
        arrow.write_bytes(change(arrow.read_bytes()))
    return damage


def _features(root: Path) -> None:
    info = json.loads((root / "train" / "dataset_info.json").read_text())
    info["features"]["label"] = {"_type": "NoSuchFeature"}
    (root / "train" / "dataset_info.json").write_text(json.dumps(info))


def _saved(rows: dict[str, list[Any]], features: dict[str, Any] | None = None) -> Callable[[Path], None]:
    """A dataset of its own (written with `datasets`), in place of the stock one."""
    def damage(root: Path) -> None:
        import datasets

        ds = datasets.Dataset.from_dict(rows)
        for column, feature in (features or {}).items():
            ds = ds.cast_column(column, feature)
        ds.save_to_disk(str(root))
    return damage


def _audio_path_outside(root: Path) -> None:
    """Clips stored by path only (a struct of bytes and path, as Audio(decode=False) reads), pointing
    out of the dataset's folder (save_to_disk would embed the bytes of an Audio column's files)."""
    outside = root.parent / "elsewhere.wav"
    outside.write_bytes(D.wav_bytes(D.class_tone(0, 0), 8000))
    _saved({"speech": [{"bytes": None, "path": str(outside)}] * 8, "label": [i % 2 for i in range(8)]})(root)


def _string_audio(root: Path) -> None:
    _saved({"speech": ["not audio"] * 8, "label": [i % 2 for i in range(8)]})(root)


def _missing_label(root: Path) -> None:
    _saved({"stats": [[float(i), 1.0] for i in range(8)], "label": ["a", "b", "a", None, "b", "a", "b", "a"]})(root)


# ---- torchvision layouts -------------------------------------------------------------------------

def torchvision(name: str, damage: Callable[[Path], None]) -> Callable[[Any], Callable[[Path], dict[str, Any]]]:
    def make(stock: Path) -> Callable[[Path], dict[str, Any]]:
        def source(tmp: Path) -> dict[str, Any]:
            root = copy(stock, "sv" if name == "svhn" else "mn", tmp)
            damage(root)
            return {"kind": "torchvision", "params": {"name": name, "root": str(root)}}
        return source
    return make


RAW = "MNIST/raw"


def _gzipped(rel: str, change: Callable[[bytes], bytes] = lambda b: b) -> Callable[[Path], None]:
    """Replace an idx file by its .gz, with `change` applied to the compressed bytes."""
    def damage(root: Path) -> None:
        import gzip

        path = root / rel
        data = gzip.compress(path.read_bytes())
        path.unlink()
        path.with_name(path.name + ".gz").write_bytes(change(data))
    return damage


def _flip_middle(data: bytes) -> bytes:
    mid = len(data) // 2
    return data[:mid] + bytes(b ^ 0xFF for b in data[mid: mid + 64]) + data[mid + 64:]


def _bomb(root: Path) -> None:
    path = root / RAW / "train-images-idx3-ubyte"
    head = path.read_bytes()[:16]  # the real header: 40 images of 28x28
    path.unlink()
    D.gz_bomb(path.with_name(path.name + ".gz"), head, 2**31)


def _idx_header(rel: str, dims: tuple[int, ...]) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        D.idx(root / rel, np.zeros(dims, np.uint8))
    return damage


def _mat(content: bytes) -> Callable[[Path], None]:
    return lambda root: (root / "train_32x32.mat").write_bytes(content)


def _hdf5_mat(root: Path) -> None:
    head = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .".ljust(116)
    (root / "train_32x32.mat").write_bytes((head + b"\0" * 8 + b"\x00\x02IM").ljust(512, b"\0") + b"\x89HDF\r\n\x1a\n" + b"\0" * 512)


def _mat_without_x(root: Path) -> None:
    from scipy.io import savemat

    savemat(root / "train_32x32.mat", {"images": np.zeros((2, 2)), "y": np.ones((2, 1))})


# ---- sources paired by label ---------------------------------------------------------------------

def paired(image_classes: tuple[str, ...], audio_classes: tuple[str, ...]) -> Callable[[Any], Callable[[Path], dict[str, Any]]]:
    def make(stock: Path) -> Callable[[Path], dict[str, Any]]:
        def source(tmp: Path) -> dict[str, Any]:
            img = D.image_folder(tmp / "pics", n_per_class=3, classes=image_classes)
            aud = D.audio_folder(tmp / "clips", n_per_class=3, classes=audio_classes)
            return {"kind": "paired", "params": {"by": "label", "sources": {
                "pictures": {"kind": "image_folder", "params": {"root": str(img), "size": [8, 8]}},
                "sounds": {"kind": "audio_folder", "params": {"root": str(aud), "sample_rate": 8000}}}}}
        return source
    return make


def npz_kinds(train_dtype: Any, test_dtype: Any) -> Callable[[Any], Callable[[Path], dict[str, Any]]]:
    """Token ids declared `kinds: {tok: text}`, with the dtypes given to each split."""
    def make(stock: Path) -> Callable[[Path], dict[str, Any]]:
        def source(tmp: Path) -> dict[str, Any]:
            for name, dtype in (("train", train_dtype), ("test", test_dtype)):
                np.savez(tmp / f"{name}.npz", tok=(np.arange(16).reshape(8, 2) % 5).astype(dtype), labels=np.arange(8) % 2)
            return {"kind": "npz", "params": {"train": str(tmp / "train.npz"), "test": str(tmp / "test.npz"), "kinds": {"tok": "text"}}}
        return source
    return make


def npz_channels_last() -> Callable[[Any], Callable[[Path], dict[str, Any]]]:
    """RGB images saved [N, H, W, 3], as most image libraries hold them."""
    def make(stock: Path) -> Callable[[Path], dict[str, Any]]:
        def source(tmp: Path) -> dict[str, Any]:
            for seed, name in enumerate(("train", "test")):
                np.savez(tmp / f"{name}.npz", img=np.random.default_rng(seed).random((8, 16, 16, 3), dtype=np.float32), labels=np.arange(8) % 2)
            return {"kind": "npz", "params": {"train": str(tmp / "train.npz"), "test": str(tmp / "test.npz")}}
        return source
    return make


def split_file_is(test: Callable[[Path, Path], Path], make: Any) -> Callable[[Any], Callable[[Path], dict[str, Any]]]:
    """A source whose test-split file is `test(train file, tmp)`: the training file itself, or a link to it."""
    def outer(stock: Path) -> Callable[[Path], dict[str, Any]]:
        def source(tmp: Path) -> dict[str, Any]:
            src = make(stock)(tmp)
            train_key, test_key = ("path", "test_path") if src["kind"] == "csv" else ("train", "test")
            src["params"][test_key] = str(test(Path(src["params"][train_key]), tmp))
            return src
        return source
    return outer


def _linked(train: Path, tmp: Path) -> Path:
    (tmp / f"link{train.suffix}").symlink_to(train)
    return tmp / f"link{train.suffix}"


def table_at_folder() -> Callable[[Any], Callable[[Path], dict[str, Any]]]:
    """The stock table's source with its `path` naming the folder that holds the CSV."""
    def make(stock: Path) -> Callable[[Path], dict[str, Any]]:
        def source(tmp: Path) -> dict[str, Any]:
            src = table()(stock)(tmp)
            src["params"]["path"] = str(tmp)
            return src
        return source
    return make


def _emptied(root: Path) -> None:
    """A Dataset of no rows, saved as `save_to_disk` saves it."""
    import datasets

    datasets.Dataset.from_dict({"img": [], "speech": [], "label": []}).save_to_disk(str(root))


def _validation_for_test(root: Path) -> None:
    """The saved DatasetDict's test split renamed validation (as many hub datasets ship)."""
    (root / "test").rename(root / "validation")
    (root / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "validation"]}))


DIGITS = tuple("0123456789")
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
T = "{tmp}"
CASES: list[tuple[str, Callable[[Any], Callable[[Path], dict[str, Any]]], tuple[str, ...]]] = [
    # --- image folders
    ("class folders 7 and 007", numbered_folders("7", "007", "3"), (f"{KEY}.root: {T}/num: class folders '007' and '7' both name class 7",)),
    ("7 in train/, 07 in test/", numbered_folders("train/7", "train/3", "test/07", "test/3"), (f"{KEY}.root: {T}/num: class folders '07' and '7'",)),
    ("split folders named Train and Test", numbered_folders("Train/cat", "Train/dog", "Test/cat", "Test/dog"),
     (f"{KEY}.root: {T}/num/Test looks like a split folder; a split root holds exactly `train/` and `test/` (lower case)",)),
    ("train/ beside class folders", numbered_folders("train/cat", "cat", "dog"), (f"{KEY}.root: {T}/num/train looks like a split folder",)),
    ("a folder beside train/ and test/", numbered_folders("train/cat", "train/dog", "test/cat", "test/dog", "val/cat"),
     (f"{KEY}.root: {T}/num holds 'val' beside train/ and test/",)),
    ("one class name in two Unicode forms", numbered_folders("caf\u00e9", "cafe\u0301", "tea"),
     (f"{KEY}.root: {T}/num: class folders", "spell the same name in two Unicode forms")),
    ("a link to no file in a class folder", images(lambda r: (r / "ant/gone.png").symlink_to(r / "nowhere.png")),
     (f"{KEY}.root: {T}/img/ant/gone.png is a link to a file that does not exist",)),
    ("a 20000x20000 PNG (decompression bomb)", images(_write("ant/huge.png", png_header(20000, 20000))),
     (f"{KEY}.root: {T}/img/ant/huge.png: refused: an image of 400,000,000 pixels, more than the 89,478,485",)),
    ("a PNG of 100 million pixels (Pillow only warns)", images(_write("bee/big.png", png_header(10000, 10000))),
     (f"{KEY}.root: {T}/img/bee/big.png: refused: an image of 100,000,000 pixels",)),
    ("a PNG cut in half", images(_halve("cat/cat_1.png")), (f"{KEY}.root: {T}/img/cat/cat_1.png: not a readable image",)),
    ("a size of 100000 x 100000 (a typo that filled the memory)", images(size=[100000, 100000]),
     (f"{KEY}.size: at most 4096 pixels per side (every sample is held decoded), got [100000, 100000]",)),
    ("index CSV with a nan label", index_with("nan"), (f"{KEY}.index: {T}/img/index.csv: row 6 has a missing label ('nan')",)),
    ("index CSV listing a file twice", index_with("ant", lambda rows: [*rows, rows[1].rsplit(",", 1)[0] + ",bee"]),
     (f"{KEY}.index: {T}/img/index.csv: row 22 lists ant/ant_0.png again (first in row 2); each file is one sample",)),
    ("index CSV with a row longer than the header", index_with("ant", lambda rows: [*rows[:3], rows[3] + ",extra", *rows[4:]]),
     (f"{KEY}.index: {T}/img/index.csv: row 4 has more fields than the header's 2",)),
    ("index CSV with a header alone", index_with("ant", lambda rows: rows[:1]), (f"{KEY}.index: {T}/img/index.csv lists no files (a header and no rows)",)),
    # --- audio folders
    ("a float WAV of 1e30", audio(_float_wav("ant/ant_0.wav", 1e30)), (f"{KEY}.root: {T}/aud/ant/ant_0.wav: a sample of 1e+30",)),
    ("a WAV header claiming 2147483647 Hz", audio(_wav_rate("ant/ant_0.wav", 2**31 - 1)),
     (f"{KEY}.root: {T}/aud/ant/ant_0.wav: the file says its sample rate is 2,147,483,647 Hz, outside 1..1,000,000 (a damaged header?)",)),
    ("a float WAV of NaN", audio(_float_wav("bee/bee_2.wav", float("nan"))), (f"{KEY}.root: {T}/aud/bee/bee_2.wav: the audio holds NaN or infinite samples",)),
    ("a WAV truncated to 300 bytes", audio(lambda r: (r / "cat/cat_0.wav").write_bytes((r / "cat/cat_0.wav").read_bytes()[:300])),
     (f"{KEY}.root: {T}/aud/cat/cat_0.wav: the file is truncated: its data chunk promises 4,800 bytes of audio, the file holds 256",)),
    ("a FLAC cut in half", audio(_halve("dog/dog_1.flac")), (f"{KEY}.root: {T}/aud/dog/dog_1.flac",)),
    ("a hop longer than the clip (one frame)", audio(hop_length=100000),
     ("modality 'audio': samples of 1 step(s) along their last axis, fewer than the 3 its encoder needs",)),
    ("fmin above fmax", audio(fmin=3000.0, fmax=1000.0), (f"{KEY}.fmax: must lie in (3000, 4000] Hz",)),
    ("fmax above half the sample rate", audio(fmax=6000.0), (f"{KEY}.fmax: must lie in (0, 4000] Hz", "got 6000.0")),
    ("negative fmin", audio(fmin=-5.0), (f"{KEY}.fmin: must lie in [0, 4000) Hz", "got -5.0")),
    ("duration .nan", audio(duration=float("nan")), (f"{KEY}.duration: must be a positive number of seconds", "got nan")),
    ("a duration of a day", audio(duration=86400.0), (f"{KEY}.duration:", "got 86400.0")),
    ("sample_rate 0", audio(sample_rate=0), (f"{KEY}.sample_rate: must lie in 1..1000000 Hz, got 0",)),
    ("more mel bands than FFT bins", audio(n_mels=128, n_fft=64, hop_length=32), (f"{KEY}.n_mels: 66 of the 128 mel bands", "lower n_mels or raise n_fft")),
    # --- tables
    ("a two-character delimiter", table(delimiter=";;"), (f"{KEY}.delimiter: must be one character other than a quote or a line break, got ';;'",)),
    ("a quote as delimiter", table(delimiter='"'), (f"{KEY}.delimiter: must be one character", "got '\"'")),
    ("a column twice in the header", table(header("id,height,height,note,label")),
     (f"{KEY}.path: {T}/t.csv: column 'height' appears twice in the header (columns 2 and 3)",)),
    ("an unnamed header column", table(header("id,height,,note,label")), (f"{KEY}.path: {T}/t.csv: column 3 of the header has no name",)),
    ("labels nan", table(label_at(5, "nan")), (f"{KEY}.path: {T}/t.csv: row 5, column 'label' has a missing label ('nan')",)),
    ("labels None", table(label_at(9, "None")), (f"{KEY}.path: {T}/t.csv: row 9, column 'label' has a missing label ('None')",)),
    ("label 1.5 among integer labels", table(lambda rows: label_at(4, "1.5")([r.rsplit(",", 1)[0] + f",{i % 4}" if i else r for i, r in enumerate(rows)])),
     (f"{KEY}.path: {T}/t.csv: row 4, column 'label' has label '1.5', not a whole number",)),
    ("label -1.0 among integer labels", table(lambda rows: label_at(7, "-1.0")([r.rsplit(",", 1)[0] + f",{i % 4}" if i else r for i, r in enumerate(rows)])),
     (f"{KEY}.path: {T}/t.csv: row 7, column 'label' has negative label -1.0",)),
    ("label 1e30 among integer labels", table(lambda rows: label_at(3, "1e30")([r.rsplit(",", 1)[0] + f",{i % 4}" if i else r for i, r in enumerate(rows)])),
     (f"{KEY}.path: {T}/t.csv: row 3, column 'label' has label 1e30; labels must lie in 0..99999",)),
    ("the label among the numeric columns", table(numeric=["height", "label"]),
     (f"{KEY}.numeric: column 'label' is the label column; each column plays one part",)),
    ("the label as a text column", table(text=["note", "label"]), (f"{KEY}.text: column 'label' is the label column",)),
    ("the label ignored", table(ignore=["id", "label"]), (f"{KEY}.ignore: column 'label' is the label column",)),
    ("the label as the id", table(id_column="label"), (f"{KEY}.id_column: column 'label' is the label column",)),
    ("a numeric column listed twice", table(numeric=["height", "height"]), (f"{KEY}.numeric: column 'height' is listed twice",)),
    ("a column both numeric and text", table(numeric=["height", "note"]), (f"{KEY}.text: column 'note' is also in numeric",)),
    ("header names that differ only in spaces", table(header("id,height, height,note,label")),
     (f"{KEY}.path: {T}/t.csv: columns 'height' and ' height' differ only in spaces",)),
    ("a test_path that is the training file", split_file_is(lambda train, tmp: train, table()),
     (f"{KEY}.test_path: {T}/t.csv is the training file; the test split must hold other samples",)),
    ("a test_path linking to the training file", split_file_is(_linked, table()), (f"{KEY}.test_path: {T}/link.csv is the training file",)),
    ("an npz test file that is the training file", split_file_is(lambda train, tmp: train, npz_channels_last()),
     (f"{KEY}.test: {T}/train.npz is the training file",)),
    ("a folder as the CSV path", table_at_folder(), (f"{KEY}.path: {T} is a folder; give the CSV file's path",)),
    ("negative decoding threads", images(workers=-1), (f"{KEY}.workers: must lie in 0..256 decoding threads (0: up to 8), got -1",)),
    ("tokenizer max_length 0", table(tokenizer={"max_length": 0}), (f"{KEY}.tokenizer.max_length: must lie in 1..65536, got 0",)),
    ("tabular_name a text column's name", table(tabular_name="note"),
     (f"{KEY}.tabular_name: 'note' also names a text column; each modality needs its own name",)),
    ("tabular_name empty", table(tabular_name=""), ("stream.sources.mine: '' cannot name a modality (a name must not be empty or hold a '.')",)),
    ("tabular_name with a dot", table(tabular_name="a.b"), ("stream.sources.mine: 'a.b' cannot name a modality",)),
    ("a number beyond float32", table(lambda rows: [r.replace(r.split(",")[1], "1e39", 1) if i == 3 else r for i, r in enumerate(rows)]),
     (f"{KEY}.path: {T}/t.csv: row 4, column 'height': not a finite number ('1e39')",)),
    ("tokenizer max_length of a billion", table(tokenizer={"max_length": 10**9}), (f"{KEY}.tokenizer.max_length: must lie in 1..65536",)),
    ("an hf tokenizer given by hub name", hf_tokenizer(lambda f: "bert-base-uncased"),
     (f"{KEY}.tokenizer.path: bert-base-uncased is not a folder",)),
    ("an hf tokenizer that asks for custom code", hf_tokenizer(_tokenizer_asks_for_code),
     (f"{KEY}.tokenizer.path: {T}/bert/tokenizer_config.json asks for custom code ('auto_map')",)),
    # --- saved datasets
    ("the label column as a modality", dataset(columns={**MEDIA, "lab": {"column": "label", "kind": "tabular"}}),
     (f"{KEY}.columns.lab.column: column 'label' is the label column; each column plays one part",)),
    ("a DatasetDict of train and validation, no test", dataset(_validation_for_test),
     (f"{KEY}.test_split: {T}/ds has no split 'test' but has validation; set test_split to the one to test on",)),
    ("a dataset of no rows", dataset(_emptied, folder="empty"), (f"{KEY}.path: {T}/empty: an empty dataset (its state.json lists no data file)",)),
    ("state.json naming ../outside.arrow", dataset(lambda r: _state(r, "../../outside.arrow")),
     (f"{KEY}.path: {T}/ds/train/state.json: data file '../../outside.arrow' is not a file inside {T}/ds",)),
    ("state.json naming an absolute path", dataset(lambda r: _state(r, "{outside}")),
     (f"{KEY}.path: {T}/ds/train/state.json: data file '{T}/outside.arrow' is not a file inside {T}/ds",)),
    ("dataset_dict.json naming split ../x", dataset(lambda r: (r / "dataset_dict.json").write_text('{"splits": ["train", "../x"]}')),
     (f"{KEY}.path: {T}/ds/dataset_dict.json: split '../x' is not the name of a folder inside {T}/ds",)),
    ("state.json that is not JSON", dataset(lambda r: (r / "test" / "state.json").write_text("{")),
     (f"{KEY}.path: {T}/ds/test/state.json: not readable JSON",)),
    ("an arrow file cut in half", dataset(_arrow(lambda b: b[: len(b) // 2])), (f"{KEY}.path: {T}/ds: not a dataset saved with save_to_disk",)),
    ("an arrow file with a zeroed header", dataset(_arrow(lambda b: b"\0" * 64 + b[64:])), (f"{KEY}.path: {T}/ds: not a dataset saved with save_to_disk",)),
    ("an unknown feature type", dataset(_features), (f"{KEY}.path: {T}/ds: not a dataset saved with save_to_disk", "NoSuchFeature")),
    ("an audio column of strings", dataset(_string_audio, {"audio": {"column": "speech", "kind": "audio"}}, folder="own"),
     (f"{KEY}.path: {T}/own, column 'speech': expected a datasets.Audio column",)),
    ("audio stored as a path outside the folder", dataset(_audio_path_outside, {"audio": {"column": "speech", "kind": "audio"}}, folder="own"),
     (f"{KEY}.path: {T}/own, column 'speech', sample 0: its bytes are not stored, and its path '{T}/elsewhere.wav' is not a file inside",)),
    ("a label column with None", dataset(_missing_label, {"stats": {"column": "stats", "kind": "tabular"}}, folder="own"),
     (f"{KEY}.path: {T}/own, column 'label': sample 3 has a missing label ('None')",)),
    # --- torchvision layouts
    ("a corrupt MNIST .gz", torchvision("mnist", _gzipped(f"{RAW}/train-images-idx3-ubyte", _flip_middle)),
     (f"{KEY}.root: {T}/mn/{RAW}/train-images-idx3-ubyte.gz: not readable",)),
    ("an MNIST labels .gz cut short", torchvision("mnist", _gzipped(f"{RAW}/t10k-labels-idx1-ubyte", lambda b: b[:-12])),
     (f"{KEY}.root: {T}/mn/{RAW}/t10k-labels-idx1-ubyte.gz: not readable",)),
    ("a 2 MB MNIST .gz that inflates to 2 GiB", torchvision("mnist", _bomb),
     (f"{KEY}.root: {T}/mn/{RAW}/train-images-idx3-ubyte.gz: holds more data than the 31,360 bytes its header promises",)),
    ("MNIST images of 32x32", torchvision("mnist", _idx_header(f"{RAW}/t10k-images-idx3-ubyte", (40, 32, 32))),
     (f"{KEY}.root: {T}/mn/{RAW}/t10k-images-idx3-ubyte: holds images of 32x32 pixels; this dataset's are 28x28",)),
    ("MNIST with more images than labels", torchvision("mnist", _idx_header(f"{RAW}/train-images-idx3-ubyte", (41, 28, 28))),
     (f"{KEY}.root: {T}/mn/{RAW}/train-images-idx3-ubyte: its header promises 41 images for 40 labels",)),
    ("an SVHN .mat in v7.3 (HDF5)", torchvision("svhn", _hdf5_mat), (f"{KEY}.root: {T}/sv/train_32x32.mat: a MATLAB v7.3 (HDF5) file",)),
    ("an SVHN .mat of garbage", torchvision("svhn", _mat(b"garbage" * 40)), (f"{KEY}.root: {T}/sv/train_32x32.mat: not an SVHN .mat file",)),
    ("an SVHN .mat without X", torchvision("svhn", _mat_without_x), (f"{KEY}.root: {T}/sv/train_32x32.mat: holds ['images', 'y'], not SVHN's X and y",)),
    # --- pairing by label, and kinds declared for .npz
    ("images 0..9 paired by label with audio zero..nine", paired(DIGITS, WORDS),
     (f"{KEY}.sources.sounds: class 0 is 'eight' there but '0' in 'pictures'",)),
    ("images cat/dog paired by label with audio ant/cat/dog", paired(("cat", "dog"), ("ant", "cat", "dog")),
     (f"{KEY}.sources.sounds: class 0 is 'ant' there but 'cat' in 'pictures'",)),
    ("images saved channels last", npz_channels_last(),
     ("has samples of shape (16, 16, 3), which looks channels last; images are [N, C, H, W] (np.transpose(a, (0, 3, 1, 2))), "
      "or set kinds.img: image to keep it",)),
    ("text declared, floats in train", npz_kinds(np.float32, np.int64), (f"{KEY}.kinds.tok: kind 'text' takes integer token ids, but 'tok' in {T}/train.npz holds float32",)),
    ("text declared, floats in test", npz_kinds(np.int64, np.float64), (f"{KEY}.kinds.tok: kind 'text' takes integer token ids, but 'tok' in {T}/test.npz holds float64",)),
]


@pytest.mark.parametrize("name,make,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_user_files(earlier: Earlier, stock: Path, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch,
                        name: str, make: Any, expected: tuple[str, ...]) -> None:
    monkeypatch.setenv("LIFELONG_MOE_CACHE", str(tmp_path / "cache"))  # decoded arrays of its own
    n_experiences = 5 if "paired" in name else 2
    argv = user_source(make(stock), n_experiences=n_experiences)(earlier, tmp_path)
    texts = [e.replace(T, str(tmp_path)) for e in expected]
    lines = [one_line_error(main, [command, *argv], capsys, *texts) for command in ("validate", "run")]
    assert lines[0] == lines[1]
    earlier.assert_untouched()


def test_a_gz_bomb_is_refused_before_it_inflates(earlier: Earlier, stock: Path, tmp_path: Path, capsys: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """2 MB that inflate to 2 GiB: refused having held at most a few MB (it used to take 5 GB)."""
    import tracemalloc

    monkeypatch.setenv("LIFELONG_MOE_CACHE", str(tmp_path / "cache"))
    argv = user_source(torchvision("mnist", _bomb)(stock))(earlier, tmp_path)
    assert (tmp_path / "mn" / RAW / "train-images-idx3-ubyte.gz").stat().st_size < 3 * 2**20
    tracemalloc.start()
    try:
        one_line_error(main, ["validate", *argv], capsys, "holds more data than the 31,360 bytes its header promises")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MiB while refusing"


# ---- silently wrong before, read right now ---------------------------------------------------------

def _load(kind: str, params: dict[str, Any]) -> Any:
    from lifelong_moe.registry import resolve_params
    from scenarios.sources import SOURCES, load_source
    from scenarios.sources import base as sources_base

    sources_base._CACHE.clear()
    return load_source(kind, resolve_params(SOURCES, kind, params, "params"), 0)


def test_a_float_spelling_among_integer_labels_is_that_integer(tmp_path: Path) -> None:
    """Labels 0..3 with one `1.0` (as a spreadsheet writes a float column): class 1, not a fifth class
    that renumbers the others."""
    rows = ["a,b,label"] + [f"{i % 7 * 0.1:.1f},{i % 3},{i % 4}" for i in range(40)]
    plain = tmp_path / "plain.csv"
    plain.write_text("\n".join(rows) + "\n")
    rows[6] = rows[6].rsplit(",", 1)[0] + ",1.0"
    assert rows[6].endswith(",1.0") and (6 - 1) % 4 == 1
    floats = tmp_path / "floats.csv"
    floats.write_text("\n".join(rows) + "\n")
    a, b = _load("csv", {"path": str(plain)}), _load("csv", {"path": str(floats)})
    assert a.classes == b.classes == [0, 1, 2, 3]
    np.testing.assert_array_equal(a.train.labels, b.train.labels)
    np.testing.assert_array_equal(a.test.labels, b.test.labels)


@pytest.mark.parametrize("model", [{"name": "moe", "params": {"embed_dim": 16, "expert_hidden": 32}}, {"name": "stats", "params": {}}],
                         ids=["moe", "stats"])
def test_a_constant_feature_column_trains_the_statistics(tmp_path: Path, capsys: Any, model: dict[str, Any]) -> None:
    """A modality whose one column is constant gives features constant within every class: the class
    statistics' covariance is all zeros, and the discriminant must still be solved (it raised a
    singular-matrix error after experience 1, leaving a traceback)."""
    from conftest import tiny_config

    for name in ("train", "test"):
        np.savez(tmp_path / f"{name}.npz", x=np.full((8, 1), 0.5, np.float32), labels=np.arange(8) % 2)
    cfg = tiny_config(tmp_path / "runs", model=model, train={"epochs": 1, "batch_size": 4, "lr": 0.01})
    cfg["stream"]["sources"] = {"mine": {"kind": "npz", "params": {"train": str(tmp_path / "train.npz"), "test": str(tmp_path / "test.npz")}}}
    cfg["stream"]["split"] = {"source": "mine", "n_experiences": 1}
    assert main(["run", str(write_config(tmp_path / "c.yaml", cfg))]) == 0, capsys.readouterr().err
    results = json.loads(next((tmp_path / "runs").glob("*/version_0/results.json")).read_text())
    assert results["status"] == "complete" and all(np.isfinite(v) for row in results["accuracy_matrix"] for v in row)


def test_class_names_agree_when_pairing_by_label(tmp_path: Path) -> None:
    """The control of the refusal above: folders named alike (0..9 in both) pair as before."""
    img = D.image_folder(tmp_path / "pics", n_per_class=3, classes=DIGITS[:4])
    aud = D.audio_folder(tmp_path / "clips", n_per_class=3, classes=DIGITS[:4])
    data = _load("paired", {"by": "label", "sources": {
        "pictures": {"kind": "image_folder", "params": {"root": str(img), "size": [8, 8]}},
        "sounds": {"kind": "audio_folder", "params": {"root": str(aud), "sample_rate": 8000}}}})
    assert data.classes == [0, 1, 2, 3] and set(data.modalities) == {"image", "audio"}


def test_a_class_one_paired_source_lacks_in_a_split_is_named(tmp_path: Path) -> None:
    """Pairing by label: the sounds' test split has no 'dog', which the pictures' has: refused by its name."""
    from scenarios.errors import DataError

    img = D.image_folder(tmp_path / "pics", n_per_class=3, classes=("cat", "dog"), split_dirs=True)
    D.audio_folder(tmp_path / "clips" / "train", n_per_class=2, classes=("cat", "dog"))
    D.audio_folder(tmp_path / "clips" / "test", n_per_class=1, classes=("cat",))
    with pytest.raises(DataError, match=r"sources\.sounds: no sample of class 'dog' in its test split, which 'pictures' has"):
        _load("paired", {"by": "label", "sources": {
            "pictures": {"kind": "image_folder", "params": {"root": str(img), "size": [8, 8]}},
            "sounds": {"kind": "audio_folder", "params": {"root": str(tmp_path / "clips"), "sample_rate": 8000}}}})


def test_a_number_beyond_float32_is_refused_without_a_numpy_warning(tmp_path: Path) -> None:
    """Pytest captures warnings, so the CLI case above cannot see one: here any warning fails the test."""
    import warnings

    from scenarios.errors import DataError
    from scenarios.sources.csv_table import CsvParams, csv_pool

    path = tmp_path / "t.csv"
    path.write_text("x,label\n1.0,a\n1e39,b\n2.0,a\n3.0,b\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match=r"row 3, column 'x': not a finite number \('1e39'\)"):
            csv_pool(CsvParams(path=str(path)), seed=0)


def test_a_number_that_is_also_another_classs_name_is_refused(earlier: Earlier, stock: Path, tmp_path: Path, capsys: Any) -> None:
    """Folders 1, 2, cat and dog are labels 0..3 in name order: `1` in a class list meant label 1 (class '2'),
    silently; it is refused unless label and name agree, and the quoted name picks the folder."""
    argv = user_source(numbered_folders("1", "2", "cat", "dog")(stock))(earlier, tmp_path)
    cfg = yaml.safe_load(Path(argv[0]).read_text())
    cfg["stream"]["split"]["class_order"] = [1, 2, "cat", "dog"]
    write_config(Path(argv[0]), cfg)
    one_line_error(main, ["validate", *argv], capsys, "stream.split.class_order: 1 is ambiguous in source 'mine': label 1 is "
                   "class '2', but a class is named '1' (label 0); write class names, quoted ('1')")
    cfg["stream"]["split"]["class_order"] = ["1", "2", "cat", "dog"]
    write_config(Path(argv[0]), cfg)
    assert main(["validate", *argv]) == 0
    assert "[1, 2]" in capsys.readouterr().out  # the first experience holds the folders named 1 and 2
    earlier.assert_untouched()
