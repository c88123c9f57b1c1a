"""Users' files through each source: image and audio folders, CSV, a saved `datasets` dataset,
torchvision's on-disk layouts and pairing across sources; decoding is cached on disk; broken or missing
files get one line naming them."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import datafiles as D
from conftest import tiny_config, write_yaml
from lifelong_moe.cli import main
from lifelong_moe.registry import resolve_params
from scenarios.sources import SOURCES, load_source
from scenarios.sources import base as sources_base


def load(kind: str, params: dict[str, Any], seed: int = 0):
    sources_base._CACHE.clear()  # the in-process memo; the disk cache is what these tests look at
    return load_source(kind, resolve_params(SOURCES, kind, params, "params"), seed)


def fast_config(tmp_path: Path, sources: dict[str, Any], split_source: str, n_experiences: int = 2, **extra: Any) -> Path:
    """A tiny config around `sources`: one epoch, no extra evaluations or plots."""
    cfg = tiny_config(tmp_path / "runs")
    cfg["stream"]["sources"] = sources
    cfg["stream"]["split"] = {"source": split_source, "n_experiences": n_experiences}
    cfg["train"]["epochs"] = 1
    cfg["evaluate_untrained"] = False
    cfg["modality_eval"] = {"subsets": False, "single_each_experience": False, "missing_rates": []}
    cfg["output"]["plots"] = False
    cfg.update(extra)
    return write_yaml(tmp_path / "config.yaml", cfg)


# ---------------------------------------------------------------- each source's decoding


def test_image_folder_decodes_every_mode(tmp_path):
    from PIL import Image

    root = D.image_folder(tmp_path / "img")
    data = load("image_folder", {"root": str(root), "size": [12, 16], "fit": "stretch"})
    assert data.modalities["image"].shape == (3, 12, 16) and data.classes == [0, 1, 2, 3]
    assert len(data.train) + len(data.test) == 24 and len(data.test) == 4  # 0.2 of 6 per class, rounded
    x = data.train.inputs["image"]
    assert x.dtype == np.float32 and x.min() >= 0.0 and x.max() <= 1.0
    # an RGB PNG decodes to exactly its pixels; labels follow sorted class names (ant=0, bee=1, ...)
    exact = load("image_folder", {"root": str(root), "size": [12, 16], "fit": "stretch", "test_fraction": 0.5})
    img = np.asarray(Image.open(root / "bee" / "bee_1.png"), dtype=np.float32).transpose(2, 0, 1) / 255
    pool = np.concatenate([exact.train.inputs["image"], exact.test.inputs["image"]])
    labels = np.concatenate([exact.train.labels, exact.test.labels])
    assert any(np.allclose(p, img, atol=1e-6) for p in pool[labels == 1])
    # alpha is composited over white: a transparent image decodes to white
    Image.new("RGBA", (5, 5), (10, 20, 30, 0)).save(root / "ant" / "clear.png")
    grey = load("image_folder", {"root": str(root), "size": [4, 4], "channels": 1, "test_fraction": 0.5})
    assert grey.modalities["image"].shape == (1, 4, 4)
    assert np.isclose(np.concatenate([grey.train.inputs["image"], grey.test.inputs["image"]]).max(), 1.0)


def test_image_folder_split_folders_and_index_csv(tmp_path):
    root = D.image_folder(tmp_path / "img", split_dirs=True)
    data = load("image_folder", {"root": str(root), "size": [8, 8]})
    assert (len(data.train), len(data.test)) == (16, 8)  # as the train/ and test/ folders hold them
    rows = ["path,label,split"] + [f"{p.relative_to(root)},{p.parent.name},{p.parts[-3]}" for p in sorted(root.rglob("*.*"))]
    (root / "index.csv").write_text("\n".join(rows) + "\n")
    by_index = load("image_folder", {"index": str(root / "index.csv"), "size": [8, 8]})
    np.testing.assert_array_equal(by_index.train.labels, data.train.labels)
    np.testing.assert_array_equal(by_index.test.inputs["image"], data.test.inputs["image"])


def test_a_class_named_like_a_split_is_a_class(tmp_path):
    """A class folder named `train` (CIFAR-100 has one) holding files, beside other class folders, is a class; a
    `train` folder holding class folders among class folders is refused (tests/test_bad_inputs_files.py)."""
    root = D.image_folder(tmp_path / "img", classes=("bus", "car", "train"))
    data = load("image_folder", {"root": str(root), "size": [8, 8]})
    assert sorted(data.class_names.values()) == ["bus", "car", "train"] and len(data.classes) == 3


def test_holdout_may_leave_a_small_class_untested_and_ignore_may_repeat_the_id_column(tmp_path):
    """A class of 2 samples keeps both for training under holdout's 0.2 (round(0.4) = 0 held out), as any test
    split may lack a class; `ignore` naming the id column too is redundant, not an error."""
    table = tmp_path / "t.csv"
    rows = [f"r{i},{i % 2 + 0.1 * i},{['red', 'white'][i % 2]}" for i in range(40)] + ["x1,5.0,rose", "x2,5.1,rose"]
    table.write_text("id,x,label\n" + "\n".join(rows) + "\n")
    data = load("holdout", {"source": {"kind": "csv", "params": {"path": str(table), "id_column": "id", "ignore": ["id"]}},
                            "fraction": 0.2})
    rose = {v: k for k, v in data.class_names.items()}["rose"]
    assert int((data.train.labels == rose).sum()) == 2 and int((data.test.labels == rose).sum()) == 0


def test_integer_class_folders_keep_their_numbers(tmp_path):
    root = D.image_folder(tmp_path / "img", classes=("3", "10"))
    data = load("image_folder", {"root": str(root), "size": [8, 8]})
    assert data.classes == [3, 10]


def test_audio_folder_log_mel_equals_librosa(tmp_path):
    import librosa
    import soundfile as sf

    root = D.audio_folder(tmp_path / "aud")
    data = load("audio_folder", {"root": str(root), "sample_rate": 8000, "duration": 0.25, "n_mels": 20, "n_fft": 256,
                                 "hop_length": 64, "standardize": False, "test_fraction": 0.5})
    spec = data.modalities["audio"]
    assert spec.kind == "signal" and spec.shape == (20, 1 + 2000 // 64)
    wave, rate = sf.read(root / "ant" / "ant_0.wav", dtype="float32")
    assert rate == 8000  # mono at the target rate: no resampling
    ref = np.log(librosa.feature.melspectrogram(y=wave[:2000], sr=8000, n_fft=256, hop_length=64, n_mels=20) + 1e-6)
    pool = np.concatenate([data.train.inputs["audio"], data.test.inputs["audio"]])
    assert min(np.abs(p - ref).max() for p in pool) < 1e-3
    # waveform: stereo averaged, resampled from 11025 Hz, padded to the duration
    raw = load("audio_folder", {"root": str(root), "features": "waveform", "sample_rate": 16000, "duration": 0.5})
    assert raw.modalities["audio"].shape == (1, 8000)
    x = np.concatenate([raw.train.inputs["audio"], raw.test.inputs["audio"]])
    assert np.all(x[:, 0, -100:] == 0) and np.abs(x).max() > 0.3  # 0.3 s of tone, then zeros
    standardized = load("audio_folder", {"root": str(root), "sample_rate": 8000, "duration": 0.25})
    assert abs(float(standardized.train.inputs["audio"].mean())) < 1e-4


def test_csv_numeric_text_and_label(tmp_path):
    path = D.csv_table(tmp_path / "table.csv")
    data = load("csv", {"path": str(path), "text": ["note"], "id_column": "id", "test_fraction": 0.25})
    assert set(data.modalities) == {"tabular", "note"}
    assert data.modalities["tabular"].shape == (2,) and data.modalities["note"].kind == "text"
    # padding, unknown, 13 class words, "number" and the numbers 0-7 (each in some class's training rows)
    assert data.modalities["note"].vocab_size == 2 + 13 + 1 + 8
    assert data.train.inputs["note"].max() < data.modalities["note"].vocab_size
    tab = data.train.inputs["tabular"]
    np.testing.assert_allclose(tab.mean(0), 0, atol=1e-5)  # standardized by the training split
    np.testing.assert_allclose(tab.std(0), 1, atol=1e-4)
    assert data.train.inputs["note"].shape == (24, 32) and data.classes == [0, 1, 2, 3]


def test_hf_dataset_columns_to_modalities(tmp_path):
    path = D.hf_dataset(tmp_path / "ds")
    columns = {"image": {"column": "img", "kind": "image"}, "audio": {"column": "speech", "kind": "audio"},
               "caption": {"column": "caption", "kind": "text"}, "stats": {"column": "stats", "kind": "tabular"}}
    data = load("hf_dataset", {"path": str(path), "columns": columns, "image": {"size": [12, 16], "fit": "stretch"},
                               "audio": {"sample_rate": 8000, "duration": 0.3}})
    assert (len(data.train), len(data.test)) == (16, 8)  # the saved train and test splits
    assert data.modalities["image"].shape == (3, 12, 16) and data.modalities["audio"].kind == "signal"
    assert data.modalities["caption"].kind == "text" and data.modalities["stats"].shape == (2,)
    expect = D.class_image(0, 0).transpose(2, 0, 1) / 255  # test row 0 is class 0, sample 0
    np.testing.assert_allclose(data.test.inputs["image"][0], expect, atol=1e-6)
    flat = load("hf_dataset", {"path": str(D.hf_dataset(tmp_path / "flat", dict_splits=False)),
                               "columns": {"stats": {"column": "stats", "kind": "tabular"}}, "test_fraction": 0.5})
    assert (len(flat.train), len(flat.test)) == (12, 12)


def test_hf_text_columns_take_missing_values_as_empty_and_refuse_an_image_column(tmp_path):
    import datasets

    from scenarios.errors import DataError

    path = tmp_path / "texts"
    datasets.Dataset.from_dict({"note": ["red wine", None, "white", None], "label": [0, 1, 0, 1]}).save_to_disk(str(path))
    data = load("hf_dataset", {"path": str(path), "columns": {"note": {"column": "note", "kind": "text"}}, "test_fraction": 0.5})
    tokens = np.concatenate([data.train.inputs["note"], data.test.inputs["note"]])
    assert (tokens.sum(1) == 0).sum() == 2  # the two missing notes are empty texts, not the word "None"
    with pytest.raises(DataError, match=r"columns\.picture\.column: column 'img' holds \w+ values \(sample 0\), not text"):
        load("hf_dataset", {"path": str(D.hf_dataset(tmp_path / "ds")), "columns": {"picture": {"column": "img", "kind": "text"}}})
    with pytest.raises(DataError, match=r"^params\.label: column 'img' holds Image values, not class names or numbers"):
        load("hf_dataset", {"path": str(tmp_path / "ds"), "label": "img", "columns": {"stats": {"column": "stats", "kind": "tabular"}}})


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "kmnist", "cifar10", "cifar100", "svhn"])
def test_torchvision_layouts(tmp_path, name):
    root = tmp_path / "data"
    folder = {"fashion_mnist": "FashionMNIST", "kmnist": "KMNIST"}.get(name, "MNIST")
    if name in ("mnist", "fashion_mnist", "kmnist"):
        D.mnist(root, folder)
    elif name.startswith("cifar"):
        D.cifar(root, hundred=name == "cifar100")
    else:
        D.svhn(root)
    data = load("torchvision", {"name": name, "root": str(root)})
    img = data.train.inputs["image"]
    assert img.dtype == np.float32 and img.shape[1:] == ((1, 28, 28) if "mnist" in name else (3, 32, 32))
    assert data.classes == list(range(10))
    if name == "mnist":  # torchvision's own reader agrees (its MNIST class checks files exist, not checksums)
        import torchvision

        ref = torchvision.datasets.MNIST(str(root), train=True, download=False)
        np.testing.assert_array_equal((img[:, 0] * 255).round().astype(np.uint8), ref.data.numpy())
        np.testing.assert_array_equal(data.train.labels, ref.targets.numpy())
    if name == "cifar10":
        assert len(data.train) == 5 * 40 and len(data.test) == 40
        np.testing.assert_allclose(img[0], D.class_image(0, 0, (32, 32)).transpose(2, 0, 1) / 255, atol=1e-6)
    if name == "svhn":
        assert data.train.labels[9] == 0  # stored as 10


def test_paired_by_id_and_by_label(tmp_path):
    img = D.image_folder(tmp_path / "img")
    aud = D.audio_folder(tmp_path / "aud")
    audio = {"root": str(aud), "sample_rate": 8000, "duration": 0.25}
    by_id = load("paired", {"by": "id", "test_fraction": 0.5, "sources": {
        "pictures": {"kind": "image_folder", "params": {"root": str(img), "size": [8, 8]}},
        "sounds": {"kind": "audio_folder", "params": audio}}})
    assert set(by_id.modalities) == {"image", "audio"} and (len(by_id.train), len(by_id.test)) == (12, 12)
    # each pair holds the same stem: its image and its clip carry the same class signal
    alone = load("audio_folder", {**audio, "standardize": False})
    assert len(alone.train) + len(alone.test) == 24
    # by label: another kind (generated digits) takes part; classes 0-3 from the folders' class indices
    by_label = load("paired", {"by": "label", "sources": {
        "pictures": {"kind": "image_folder", "params": {"root": str(img), "size": [8, 8]}},
        "sounds": {"kind": "audio_folder", "params": audio}}})
    assert len(by_label.train) == 20 and len(by_label.test) == 4
    again = load("paired", {"by": "label", "sources": {
        "pictures": {"kind": "image_folder", "params": {"root": str(img), "size": [8, 8]}},
        "sounds": {"kind": "audio_folder", "params": audio}}})
    np.testing.assert_array_equal(again.train.inputs["audio"], by_label.train.inputs["audio"])  # seeded
    other_seed = load("paired", {"by": "label", "sources": {
        "pictures": {"kind": "image_folder", "params": {"root": str(img), "size": [8, 8]}},
        "sounds": {"kind": "audio_folder", "params": audio}}}, seed=1)
    assert not np.array_equal(other_seed.train.inputs["audio"], by_label.train.inputs["audio"])


# ---------------------------------------------------------------- validate and run, end to end


def _sources(tmp_path: Path) -> dict[str, tuple[dict[str, Any], int]]:
    """name -> (stream.sources entry, number of experiences) for every file source kind."""
    img, aud = tmp_path / "img", tmp_path / "aud"
    return {
        "image_folder": ({"kind": "image_folder", "params": {"root": str(D.image_folder(img)), "size": [8, 8]}}, 2),
        "audio_folder": ({"kind": "audio_folder", "params": {"root": str(D.audio_folder(aud)), "sample_rate": 8000, "duration": 0.25}}, 2),
        "csv": ({"kind": "csv", "params": {"path": str(D.csv_table(tmp_path / "t.csv")), "text": ["note"], "ignore": ["id"]}}, 2),
        "hf_dataset": ({"kind": "hf_dataset", "params": {"path": str(D.hf_dataset(tmp_path / "ds")), "image": {"size": [8, 8]},
                        "audio": {"sample_rate": 8000, "duration": 0.25},
                        "columns": {"image": {"column": "img", "kind": "image"}, "audio": {"column": "speech", "kind": "audio"},
                                    "caption": {"column": "caption", "kind": "text"}}}}, 2),
        "torchvision": ({"kind": "torchvision", "params": {"name": "cifar10", "root": str(D.cifar(tmp_path / "tv", n=8))}}, 5),
        "paired": ({"kind": "paired", "params": {"by": "id", "sources": {
            "i": {"kind": "image_folder", "params": {"root": str(img), "size": [8, 8]}},
            "a": {"kind": "audio_folder", "params": {"root": str(aud), "sample_rate": 8000, "duration": 0.25}}}}}, 2),
    }


@pytest.mark.parametrize("kind", ["image_folder", "audio_folder", "csv", "hf_dataset", "torchvision", "paired"])
def test_source_validates_and_runs_end_to_end(tmp_path, capsys, kind):
    source, n_exp = _sources(tmp_path)[kind]
    cfg = fast_config(tmp_path, {"mine": source}, "mine", n_exp)
    assert main(["validate", str(cfg)]) == 0
    assert f"valid (class_incremental, {n_exp} experiences" in capsys.readouterr().out
    assert main(["run", str(cfg)]) == 0
    res = json.loads((tmp_path / "runs" / "tiny" / "version_0" / "results.json").read_text())
    assert res["status"] == "complete" and len(res["accuracy_matrix"]) == n_exp


# ---------------------------------------------------------------- broken and missing files


def _corrupt_png(tmp_path):
    root = D.image_folder(tmp_path / "img")
    bad = root / "cat" / "cat_1.png"
    bad.write_bytes(bad.read_bytes()[:40])
    return {"kind": "image_folder", "params": {"root": str(root)}}, f"stream.sources.mine.params.root: {bad}: not a readable image"


def _not_an_image(tmp_path):
    root = D.image_folder(tmp_path / "img")
    (root / "dog" / "notes.jpg").write_text("hello")
    return {"kind": "image_folder", "params": {"root": str(root)}}, f"{root / 'dog' / 'notes.jpg'}: not a readable image"


def _truncated_wav(tmp_path):
    root = D.audio_folder(tmp_path / "aud")
    bad = root / "bee" / "bee_0.wav"
    bad.write_bytes(bad.read_bytes()[:30])
    return {"kind": "audio_folder", "params": {"root": str(root)}}, f"stream.sources.mine.params.root: {bad}: not a readable audio file"


def _missing_root(tmp_path):
    return {"kind": "image_folder", "params": {"root": str(tmp_path / "nowhere")}}, f"stream.sources.mine.params.root: folder not found: {tmp_path / 'nowhere'}"


def _empty_class_folder(tmp_path):
    root = D.image_folder(tmp_path / "img")
    (root / "empty").mkdir()
    return {"kind": "image_folder", "params": {"root": str(root)}}, f"class folder {root / 'empty'} has no files with extension"


def _torchvision_root_missing(tmp_path):
    return {"kind": "torchvision", "params": {"name": "cifar100", "root": str(tmp_path / "data")}}, \
        f"root: folder not found: {tmp_path / 'data'}; put train, test in {tmp_path / 'data' / 'cifar-100-python'}"


def _mnist_file_missing(tmp_path):
    root = D.mnist(tmp_path / "data")
    (root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    return {"kind": "torchvision", "params": {"name": "MNIST", "root": str(root)}}, \
        f"{root / 'MNIST' / 'raw' / 't10k-labels-idx1-ubyte'} not found under {root}: put train-images-idx3-ubyte"


def _cifar_batch_corrupt(tmp_path):
    root = D.cifar(tmp_path / "data", n=8)
    bad = root / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(b"\x80\x02garbage")
    return {"kind": "torchvision", "params": {"name": "cifar10", "root": str(root)}}, f"root: {bad}: not a CIFAR batch"


def _csv_bad_cell(tmp_path):
    path = D.csv_table(tmp_path / "t.csv")
    lines = path.read_text().splitlines()
    lines[5] = lines[5].replace(",", ",oops", 1)
    path.write_text("\n".join(lines) + "\n")
    return {"kind": "csv", "params": {"path": str(path), "text": ["note"], "ignore": ["id"]}}, \
        f"{path}: row 6, column 'height': not a number"


def _hf_not_a_dataset(tmp_path):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "junk.txt").write_text("x")
    return {"kind": "hf_dataset", "params": {"path": str(tmp_path / "ds"), "columns": {"x": {"column": "x", "kind": "tabular"}}}}, \
        f"stream.sources.mine.params.path: {tmp_path / 'ds'}: not a dataset saved with save_to_disk"


def _paired_id_absent(tmp_path):
    img, aud = D.image_folder(tmp_path / "img"), D.audio_folder(tmp_path / "aud")
    (aud / "cat" / "cat_1.flac").unlink()
    return {"kind": "paired", "params": {"sources": {"i": {"kind": "image_folder", "params": {"root": str(img)}},
                                                     "a": {"kind": "audio_folder", "params": {"root": str(aud)}}}}}, \
        "stream.sources.mine.params.sources.a: no sample with id 'cat_1' of 'i' (set missing: drop"


def _paired_bad_param(tmp_path):
    return {"kind": "paired", "params": {"sources": {"i": {"kind": "image_folder", "params": {"rooot": "x"}},
                                                     "a": {"kind": "image_folder", "params": {"root": "y"}}}}}, \
        "stream.sources.mine.params.sources.i.params.rooot: Key 'rooot' not in 'ImageFolderParams'"


BAD = [_corrupt_png, _not_an_image, _truncated_wav, _missing_root, _empty_class_folder, _torchvision_root_missing,
       _mnist_file_missing, _cifar_batch_corrupt, _csv_bad_cell, _hf_not_a_dataset, _paired_id_absent, _paired_bad_param]


@pytest.mark.parametrize("case", BAD, ids=[c.__name__.strip("_") for c in BAD])
def test_bad_or_missing_file_is_one_line(tmp_path, capsys, case):
    source, expected = case(tmp_path)
    cfg = fast_config(tmp_path, {"mine": source}, "mine")
    sources_base._CACHE.clear()
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err, err
    assert "\n" not in err and "Traceback" not in err


def test_bad_file_fails_run_before_writing(tmp_path, capsys):
    source, expected = _corrupt_png(tmp_path)
    assert main(["run", str(fast_config(tmp_path, {"mine": source}, "mine"))]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and "\n" not in err and not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- the decode cache


def test_decode_cache_is_read_and_invalidated_by_a_changed_file(tmp_path, monkeypatch):
    from PIL import Image

    from scenarios.sources import image_folder

    root = D.image_folder(tmp_path / "img")
    params = {"root": str(root), "size": [8, 8]}
    first = load("image_folder", params)
    calls = []
    real = image_folder.decode_image
    monkeypatch.setattr(image_folder, "decode_image", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    second = load("image_folder", params)
    assert calls == []  # read from the cache, nothing decoded
    np.testing.assert_array_equal(first.train.inputs["image"], second.train.inputs["image"])
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(root / "ant" / "ant_1.png")  # a changed file
    third = load("image_folder", params)
    assert len(calls) == 24  # everything decoded again
    assert not np.array_equal(np.concatenate([first.train.inputs["image"], first.test.inputs["image"]]),
                              np.concatenate([third.train.inputs["image"], third.test.inputs["image"]]))
    load("image_folder", {**params, "size": [6, 6]})  # other preprocessing: another entry
    assert len(calls) == 48


def test_cache_entries_are_written_atomically_by_concurrent_writers(tmp_path, monkeypatch):
    from scenarios.cache import ArrayCache

    monkeypatch.setenv("LIFELONG_MOE_CACHE", str(tmp_path / "cache"))
    key = {"what": "race"}
    arrays = {"x": np.arange(200_000, dtype=np.float32)}
    threads = [threading.Thread(target=ArrayCache("t").store, args=(key, arrays)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_array_equal(ArrayCache("t").load(key)["x"], arrays["x"])
    assert [p.name for p in (tmp_path / "cache" / "t").iterdir()] == [ArrayCache("t").path(key).name]  # no temp files
    ArrayCache("t").path(key).write_bytes(b"damaged")  # a damaged entry is a miss, then rewritten
    assert ArrayCache("t").load(key) is None
    cache = ArrayCache("t")
    np.testing.assert_array_equal(cache.load_or_build(key, lambda: arrays)["x"], arrays["x"])
    assert not cache.last_hit and ArrayCache("t").load(key) is not None


@pytest.mark.parametrize("values, expected", [
    (np.linspace(0.0, 1.0, 16), np.round(np.linspace(0.0, 1.0, 16) * 255)),  # a float image in [0, 1]
    (np.linspace(0.0, 255.0, 16), np.linspace(0.0, 255.0, 16)),  # 8-bit values stored as floats
    (np.linspace(0.0, 65535.0, 16), np.linspace(0.0, 255.0, 16)),  # 16-bit values stored as floats
])
def test_float_images_keep_their_contrast(tmp_path: Path, values: np.ndarray, expected: np.ndarray) -> None:
    from PIL import Image

    from scenarios.sources.decode import ImagePrep, decode_image

    path = tmp_path / "x.tif"
    Image.fromarray(np.tile(values.astype(np.float32), (4, 1)), mode="F").save(path)
    got = decode_image(path, ImagePrep(size=[4, 16], channels=1, fit="stretch"), "x.tif")[0, 0].astype(float)
    assert np.abs(got - expected).max() <= 1.0  # 8-bit rounding; before, [0, 1] floats all decoded to 0


def test_a_float_image_with_nan_is_refused_in_one_line(tmp_path: Path) -> None:
    from PIL import Image

    from scenarios.errors import DataError
    from scenarios.sources.decode import ImagePrep, decode_image

    path = tmp_path / "nan.tif"
    Image.fromarray(np.full((4, 4), np.nan, dtype=np.float32), mode="F").save(path)
    with pytest.raises(DataError, match=r"nan\.tif: not a readable image \(ValueError: it holds NaN or infinite pixel values\)"):
        decode_image(path, ImagePrep(size=[4, 4], channels=1), "nan.tif")


def test_an_index_row_ending_in_an_empty_field_reads_and_one_with_a_value_there_does_not(tmp_path):
    from scenarios.errors import DataError
    from scenarios.sources.files import read_index

    D.image_folder(tmp_path, n_per_class=1, classes=("ant",))
    name = next(tmp_path.rglob("*.png")).relative_to(tmp_path)
    (tmp_path / "index.csv").write_text(f"path,label\n{name},ant,\n")  # as spreadsheets export it
    files, classes, _ = read_index(tmp_path / "index.csv", "index")
    assert classes == ["ant"] and len(files) == 1
    (tmp_path / "index.csv").write_text(f"path,label\n{name},ant,bee\n")
    with pytest.raises(DataError, match="row 2 has more fields than the header's 2"):
        read_index(tmp_path / "index.csv", "index")
