"""Bad-input battery, data family: `.npz` files that are damaged, lie in their headers, hold the wrong
things, or are silently wrong (values beyond float32, labels beyond int64, float test data beside integer
train tokens). Each goes through the real CLI (`run`, and `validate` for the same line): exit code 2, one
line naming the config key, the file and the sample where there is one, nothing written, the earlier
run byte-identical."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from battery import Earlier, npz_config, one_line_error, save_npz, user_source, write_config
from lifelong_moe.cli import main

KEY = "stream.sources.mine.params"


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _lying_header(shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buf.getvalue() + b"\0" * 96


def files(train: Callable[[Path], Path] | None = None, test: Callable[[Path], Path] | None = None,
          n_experiences: int = 2, kinds: dict[str, str] | None = None) -> Callable[[Earlier, Path], list[str]]:
    """A config over train and test files (each made by its function, or a good default split)."""

    def build(earlier: Earlier, tmp: Path) -> list[str]:
        tr = train(tmp / "train.npz") if train else save_npz(tmp / "train.npz")
        te = test(tmp / "test.npz") if test else save_npz(tmp / "test.npz")
        cfg = npz_config(earlier, tmp, tr, te, n_experiences=n_experiences, kinds=kinds)
        return [str(write_config(tmp / "c.yaml", cfg))]

    return build


def arrays(**override: Any) -> Callable[[Path], Path]:
    return lambda path: save_npz(path, **override)


def raw(data: bytes) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        path.write_bytes(data)
        return path

    return make


def truncated(path: Path) -> Path:
    save_npz(path, n=50)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def npy_file(path: Path) -> Path:
    path.write_bytes(_npy(np.ones((8, 3), np.float32)))
    return path


def text_member(path: Path) -> Path:
    return _zip(path, {"x.npy": _npy(np.ones((8, 3), np.float32)), "labels.npy": _npy(np.arange(8) % 2), "README.txt": b"hello"})


def garbage_member(path: Path) -> Path:
    return _zip(path, {"x.npy": b"definitely not an array", "labels.npy": _npy(np.arange(8) % 2)})


def huge_header(path: Path) -> Path:
    return _zip(path, {"x.npy": _lying_header((10**12, 3)), "labels.npy": _npy(np.arange(8) % 2)})


def duplicate_member(path: Path) -> Path:
    with pytest.warns(UserWarning, match="Duplicate name"):
        return _zip(path, {"x.npy": _npy(np.ones((8, 3), np.float32))} | {"labels.npy": _npy(np.arange(8) % 2)}) and \
            _append(path, "x.npy", _npy(np.zeros((8, 3), np.float32)))


def _append(path: Path, name: str, data: bytes) -> Path:
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(name, data)
    return path


def object_labels(path: Path) -> Path:
    np.savez(path, x=np.ones((8, 3), np.float32), labels=np.array([0, 1, "two", 3, 0, 1, 0, 1], dtype=object))
    return path


def a_directory(path: Path) -> Path:
    path.mkdir()
    return path


def a_fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def dangling_link(path: Path) -> Path:
    os.symlink(path.parent / "gone.npz", path)
    return path


def link_loop(path: Path) -> Path:
    os.symlink(path.parent / "loop_b.npz", path)
    os.symlink(path, path.parent / "loop_b.npz")
    return path


def with_overflow(path: Path) -> Path:
    x = np.ones((8, 3), np.float64)
    x[6, 2] = 1e39  # finite as float64, infinite once cast to float32
    return save_npz(path, x=x)


def with_nan(path: Path) -> Path:
    x = np.ones((8, 3), np.float32)
    x[3, 1] = np.nan
    return save_npz(path, x=x)


def tokens(values: np.ndarray) -> Callable[[Path], Path]:
    return lambda path: save_npz(path, x=None, tok=values, labels=np.arange(len(values)) % 2)


T = "{train}"
S = "{test}"
CASES: list[tuple[str, Callable[[Earlier, Path], list[str]], tuple[str, ...]]] = [
    # --- damaged or foreign files
    ("truncated archive", files(train=truncated), (f"{KEY}.train: {T}: not a readable .npz file",)),
    ("not a zip at all", files(train=raw(b"just some text\n")), (f"{KEY}.train: {T}: not a readable .npz file",)),
    ("empty file", files(test=raw(b"")), (f"{KEY}.test: {S}: not a readable .npz file",)),
    (".npy given as .npz", files(train=npy_file), (f"{KEY}.train: {T}: a single .npy array, not an .npz archive",)),
    ("a member that is not an array", files(train=text_member), (f"{KEY}.train: {T}: member 'README.txt' is not a NumPy array",)),
    ("a member that is not .npy data", files(train=garbage_member), (f"{KEY}.train: {T}: array 'x' is not a readable .npy array",)),
    ("header declaring a huge shape", files(train=huge_header),
     (f"{KEY}.train: {T}: array 'x' declares shape (1000000000000, 3) of float32", "the file is damaged")),
    ("a member twice", files(train=duplicate_member), (f"{KEY}.train: {T}: the archive holds member 'x.npy' twice",)),
    ("pickled object labels", files(train=object_labels), (f"{KEY}.train: {T}: array 'labels' holds Python objects",)),
    ("train path is a directory", files(train=a_directory), (f"{KEY}.train: {T} is a directory, not an .npz file",)),
    ("test path is a FIFO", files(test=a_fifo), (f"{KEY}.test: {S} is not a regular file",)),
    ("dangling symlink", files(train=dangling_link), (f"{KEY}.train: file not found: {T}",)),
    ("symlink loop", files(test=link_loop), (f"{KEY}.test: file not found: {S}",)),
    # --- labels
    ("float labels", files(train=arrays(labels=np.arange(8) % 2 + 0.5)), (f"{KEY}.train: {T}: 'labels' must hold integer class indices, got dtype float64 (sample 0 is",)),
    ("boolean labels", files(train=arrays(labels=np.arange(8) % 2 == 0)), (f"{KEY}.train: {T}: 'labels' holds booleans",)),
    ("string labels", files(test=arrays(labels=np.array(["cat", "dog"] * 4))), (f"{KEY}.test: {S}: 'labels' must hold integer class indices, got dtype <U3",)),
    ("2-D labels", files(train=arrays(labels=(np.arange(8) % 2)[:, None])), (f"{KEY}.train: {T}: 'labels' must be a 1-D integer array", "(8, 1)")),
    ("negative label", files(train=arrays(labels=np.array([0, 1, 0, 1, -3, 1, 0, 1]))), (f"{KEY}.train: {T}: sample 4 has negative label -3",)),
    ("uint64 label beyond int64", files(train=arrays(labels=np.array([0, 1, 0, 1, 0, 2**63 + 5, 0, 1], np.uint64))),
     (f"{KEY}.train: {T}: sample 5 has label 9223372036854775813; labels must lie in 0..99999",)),
    ("label of two billion", files(test=arrays(labels=np.array([0, 1, 0, 1, 0, 1, 2_000_000_000, 1]))),
     (f"{KEY}.test: {S}: sample 6 has label 2000000000",)),
    ("no labels", files(train=arrays(labels=None)), (f"{KEY}.train: {T}: no 'labels' array (found: x)",)),
    ("only labels", files(test=arrays(x=None)), (f"{KEY}.test: {S}: no modality arrays beside 'labels'",)),
    ("empty split", files(test=arrays(x=np.ones((0, 3), np.float32), labels=np.zeros(0, int))), (f"{KEY}.test: {S}: the split is empty",)),
    ("test class never trained", files(test=arrays(labels=np.array([0, 1, 0, 1, 0, 7, 0, 1]))), (f"{KEY}.test: {S}: labels [7] never occur in {T}",)),
    ("a stream of class 0 only", files(train=arrays(labels=np.zeros(8, int)), test=arrays(labels=np.zeros(8, int)), n_experiences=1),
     ("stream: its experiences hold only class [0]",)),
    # --- modality arrays
    ("zero-width features", files(train=arrays(x=np.ones((8, 0), np.float32)), test=arrays(x=np.ones((8, 0), np.float32))),
     (f"{KEY}.train: {T}: modality 'x' has no features",)),
    ("one number per sample", files(train=arrays(x=np.ones(8, np.float32))), (f"{KEY}.train: {T}: modality 'x' has one number per sample",)),
    ("a scalar modality", files(train=arrays(x=np.float32(3.0))), (f"{KEY}.train: {T}: modality 'x' is a single value",)),
    ("fewer samples than labels", files(train=arrays(x=np.ones((5, 3), np.float32))), (f"{KEY}.train: {T}: modality 'x' has 5 samples but labels has 8",)),
    ("NaN sample", files(train=with_nan), (f"{KEY}.train: {T}: sample 3 of modality 'x' is NaN or infinite",)),
    ("infinite test sample", files(test=arrays(x=np.where(np.eye(8, 3) > 0, np.inf, 1.0).astype(np.float32))),
     (f"{KEY}.test: {S}: sample 0 of modality 'x' is NaN or infinite",)),
    ("finite in float64, infinite in float32", files(train=with_overflow), (f"{KEY}.train: {T}: sample 6 of modality 'x' overflows float32",)),
    ("complex numbers", files(train=arrays(x=np.ones((8, 3), np.complex64))), (f"{KEY}.train: {T}: modality 'x' has unsupported dtype complex64",)),
    ("boolean features", files(test=arrays(x=np.ones((8, 3), bool))), (f"{KEY}.test: {S}: modality 'x' has unsupported dtype bool",)),
    ("string features", files(train=arrays(x=np.full((8, 3), "a"))), (f"{KEY}.train: {T}: modality 'x' has unsupported dtype <U1",)),
    ("reserved modality name", files(train=arrays(mask=np.ones((8, 3), np.float32)), test=arrays(mask=np.ones((8, 3), np.float32))),
     (f"{KEY}.train: {T}: 'mask' is reserved",)),
    ("dotted modality name", files(train=arrays(**{"x.y": np.ones((8, 3), np.float32)}), test=arrays(**{"x.y": np.ones((8, 3), np.float32)})),
     (f"{KEY}.train: {T}: 'x.y' cannot name a modality",)),
    # --- train and test disagree
    ("float test beside integer train tokens", files(train=tokens(np.arange(16).reshape(8, 2) % 5),
                                                      test=tokens(np.full((8, 2), 1.7, np.float32))),
     (f"{KEY}.test: {S}: modality 'tok' holds float32 in test but int64 in train",)),
    ("shape differs between splits", files(test=arrays(x=np.ones((8, 4), np.float32))), (f"{KEY}.test: {S}: modality 'x' has shape (4,) in test but (3,) in train",)),
    ("modalities differ between splits", files(test=arrays(y=np.ones((8, 3), np.float32))), (f"{KEY}.test: {S}: modalities ['x', 'y'] differ from train's ['x']",)),
    # --- kinds
    ("kind contradicting the shape", files(kinds={"x": "image"}), (f"{KEY}.kinds.x: kind 'image' takes samples of shape [C, H, W], but 'x' in {T} has samples of shape (3,)",)),
    ("text kind on floats", files(kinds={"x": "text"}), (f"{KEY}.kinds.x: kind 'text' takes integer token ids, but 'x' in {T} holds float32",)),
    ("kind for a modality that is not there", files(kinds={"audio": "signal"}), (f"{KEY}.kinds.audio: no modality 'audio' in {T}",)),
    ("empty kind", files(kinds={"x": ""}), (f"{KEY}.kinds.x: the modality kind must be a non-empty name",)),
    ("3-D samples without a kind", files(train=arrays(x=np.ones((8, 1, 2, 2, 2), np.float32)), test=arrays(x=np.ones((8, 1, 2, 2, 2), np.float32))),
     (f"{KEY}.train: {T}: cannot infer the kind of modality 'x' with samples of shape (1, 2, 2, 2); set kinds.x",)),
    # --- token ids
    ("token id of 2**40", files(train=tokens(np.array([[1, 2]] * 7 + [[3, 2**40]])), test=tokens(np.ones((8, 2), int))),
     (f"{KEY}.train: {T}: sample 7 of text modality 'tok' has token id 1099511627776; token ids must lie in 0..1048575",)),
    ("negative token id", files(train=tokens(np.ones((8, 2), int)), test=tokens(np.array([[1, 2]] * 5 + [[-4, 2]] * 3))),
     (f"{KEY}.test: {S}: sample 5 of text modality 'tok' has negative token id -4",)),
    # --- paths
    ("empty train path", lambda e, t: [str(write_config(t / "c.yaml", npz_config(e, t, "", save_npz(t / "test.npz"))))],
     (f"{KEY}.train: must be the path of an .npz file",)),
    ("missing test file", lambda e, t: [str(write_config(t / "c.yaml", npz_config(e, t, save_npz(t / "train.npz"), t / "absent.npz")))],
     (f"{KEY}.test: file not found: {{tmp}}/absent.npz",)),
]


@pytest.mark.parametrize("name,build,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_data(earlier, tmp_path, capsys, name, build, expected):
    argv = build(earlier, tmp_path)
    where = {"train": tmp_path / "train.npz", "test": tmp_path / "test.npz", "tmp": tmp_path}
    texts = [e.format(**where) for e in expected]
    lines = [one_line_error(main, [command, *argv], capsys, *texts) for command in ("validate", "run")]
    assert lines[0] == lines[1]
    earlier.assert_untouched()


def test_one_sample_classes_and_one_experience_run(earlier, tmp_path, capsys):
    """Edge cases that are not errors: a class with a single sample, a stream of one experience."""
    save_npz(tmp_path / "train.npz", n=4, x=np.random.default_rng(0).random((4, 3)).astype(np.float32), labels=np.arange(4))
    save_npz(tmp_path / "test.npz", n=4, x=np.random.default_rng(1).random((4, 3)).astype(np.float32), labels=np.arange(4))
    for n_experiences in (1, 4):
        cfg = npz_config(earlier, tmp_path, tmp_path / "train.npz", tmp_path / "test.npz", n_experiences=n_experiences,
                         name=f"edge{n_experiences}")
        cfg["output"]["root"] = str(tmp_path / "runs")  # not beside the earlier run, which later cases check
        assert main(["run", str(write_config(tmp_path / "c.yaml", cfg)), "train.epochs=1"]) == 0, capsys.readouterr().err
    earlier.assert_untouched()


# --- users' files of other kinds (folders of images or audio, tables) and a frozen encoder's output -----

def _images(tmp: Path, damage: Callable[[Path], None] = lambda root: None) -> dict[str, Any]:
    import datafiles as D

    root = D.image_folder(tmp / "img")
    damage(root)
    return {"kind": "image_folder", "params": {"root": str(root), "size": [16, 16]}}


def _table(tmp: Path, cell: str) -> dict[str, Any]:
    import datafiles as D

    path = D.csv_table(tmp / "t.csv")
    lines = path.read_text().splitlines()
    fields = lines[5].split(",")
    fields[1] = cell  # the `height` of the fifth data row (file line 6)
    lines[5] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    return {"kind": "csv", "params": {"path": str(path), "text": ["note"], "ignore": ["id"]}}


def _nan_weights(tmp: Path) -> dict[str, Any]:
    """A timm model whose weights are all NaN (a damaged download), under an image folder."""
    import torch
    from safetensors.torch import load_file, save_file

    import datafiles as D

    weights = D.timm_weights(tmp / "vit.safetensors")
    save_file({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in load_file(str(weights)).items()}, str(weights))
    return _images(tmp)


def _audio_with(tmp: Path, content: bytes) -> dict[str, Any]:
    import datafiles as D

    root = D.audio_folder(tmp / "wav")
    next(iter(sorted(root.rglob("*.wav")))).write_bytes(content)
    return {"kind": "audio_folder", "params": {"root": str(root)}}


def _one_class(root: Path) -> None:
    import shutil

    for extra in sorted(p for p in root.iterdir() if p.is_dir())[1:]:
        shutil.rmtree(extra)


FILE_CASES = [
    ("text file named .png", user_source(lambda t: _images(t, lambda r: (r / "bee" / "bee_0.png").write_bytes(b"not a picture"))),
     (f"{KEY}", "bee_0.png: not a readable image")),
    ("empty image file", user_source(lambda t: _images(t, lambda r: (r / "ant" / "ant_1.png").write_bytes(b""))),
     (f"{KEY}", "ant_1.png: not a readable image")),
    ("image folder of one class", user_source(lambda t: _images(t, _one_class)), ("stream.split.n_experiences: must lie in 1..1 (classes available), got 2",)),
    ("image root that is a file", user_source(lambda t: {"kind": "image_folder", "params": {"root": str(write_config(t / "x.yaml", {}))}}),
     (f"{KEY}", "folder not found")),
    ("table cell that is not a number", user_source(lambda t: _table(t, "tall")), (f"{KEY}", "row 6", "column 'height': not a number ('tall')")),
    ("infinite table cell", user_source(lambda t: _table(t, "inf")), (f"{KEY}", "column 'height': not a finite number ('inf')")),
    ("NaN table cell", user_source(lambda t: _table(t, "nan")), (f"{KEY}", "column 'height': not a finite number ('nan')")),
    ("audio file holding text", user_source(lambda t: _audio_with(t, b"RIFF but not really")), (f"{KEY}", "not a readable audio file")),
    ("encoder with NaN weights", user_source(_nan_weights, {"image": {"kind": "timm", "name": "test_vit", "weights": "{tmp}/vit.safetensors",
                                                                       "params": {"image_size": [32, 32], "model_args": {"img_size": 32}}}}),
     ("pretrained.image: the timm encoder gave NaN or infinite features for train sample 0 of source 'mine'",)),
]


@pytest.mark.parametrize("name,build,expected", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_baduser_source(earlier, tmp_path, capsys, monkeypatch, name, build, expected):
    monkeypatch.setenv("LIFELONG_MOE_CACHE", str(tmp_path / "cache"))  # decoded arrays of its own, never shared
    argv = build(earlier, tmp_path)
    lines = [one_line_error(main, [command, *argv], capsys, *expected) for command in ("validate", "run")]
    assert lines[0] == lines[1]
    earlier.assert_untouched()
