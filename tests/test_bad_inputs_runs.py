"""Bad-input battery, runs family: one run directory claimed by two processes, a checkpoint that another
process replaced, a resume of a run whose encoder folder or data changed afterwards, caches that must
not serve stale content, and the modes run files are written with. A second claimant is refused in one
line and changes nothing; a finished run is never rolled back; the lock goes with its process."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import datafiles as D
from battery import _scan, one_line_error, write_config
from conftest import tiny_config
from lifelong_moe import config_from_dict, run
from lifelong_moe.cli import main
from lifelong_moe.reporting.files import LOCK_FILE

STREAM = {"scenario": "class_incremental", "split": {"source": "syn", "n_experiences": 3},
          "sources": {"syn": {"kind": "synthetic", "params": {"n_classes": 6, "n_modalities": 2, "dim": 8,
                                                              "n_train_per_class": 30, "n_test_per_class": 10, "separation": 3.0}}}}


class Crash(Exception):
    pass


def _crash_after_first(line: str) -> None:
    if "experience 1/" in line:
        raise Crash(line)


def three_experiences(root: Path, epochs: int = 1) -> dict[str, Any]:
    cfg = tiny_config(root, train={"epochs": epochs, "batch_size": 16, "lr": 0.01}, evaluate_untrained=False,
                      modality_eval={"subsets": False, "single_each_experience": False, "missing_rates": []})
    cfg["stream"] = STREAM
    cfg["output"]["plots"] = False
    return cfg


def crashed(tmp: Path, cfg: dict[str, Any]) -> tuple[Path, Path]:
    """(config path, run dir) of a run stopped after its first experience."""
    path = write_config(tmp / "c.yaml", cfg)
    with pytest.raises(Crash):
        run(config_from_dict(cfg), progress=_crash_after_first)
    return path, Path(cfg["output"]["root"]) / cfg["name"] / "version_0"


def _holder(lock: Path) -> subprocess.Popen:
    """Another process holding the run directory's lock, as a running lifelong-moe does."""
    code = ("import fcntl, os, sys, time\n"
            f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.ftruncate(fd, 0); os.write(fd, f'{os.getpid()}\\n'.encode())\n"
            "print('held', flush=True)\n"
            "time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_run_directory_is_claimed_by_one_process_at_a_time(tmp_path: Path, capsys: Any) -> None:
    """While another process holds the directory, a resume is refused in one line naming it (and its pid)
    and changes nothing; once that process is gone (here killed, as by a crash), the resume goes on."""
    config, run_dir = crashed(tmp_path, three_experiences(tmp_path / "runs"))
    holder = _holder(run_dir / LOCK_FILE)
    try:
        before = _scan(run_dir)
        one_line_error(main, ["run", str(config), "--resume", str(run_dir)], capsys,
                       f"--resume: {run_dir} is being written by another lifelong-moe process (pid {holder.pid}); wait for it to end")
        assert _scan(run_dir) == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert main(["run", str(config), "--resume", str(run_dir)]) == 0, capsys.readouterr().err
    assert json.loads((run_dir / "results.json").read_text())["status"] == "complete"


def test_a_finished_run_is_never_rolled_back(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race of the report, made deterministic: a resume checks the checkpoint (1 of 3 done), and before
    it claims the directory another process resumes and finishes the run. The first must not write its
    own experience-2 checkpoint over the finished one: it is refused, and the run stays complete."""
    import lifelong_moe.run_outputs as outputs

    config, run_dir = crashed(tmp_path, three_experiences(tmp_path / "runs"))
    real_lock = outputs.lock_run_dir
    finished: list[int] = []

    def another_process_finishes_first(path: Path, key: str) -> Any:
        if not finished:
            monkeypatch.setattr(outputs, "lock_run_dir", real_lock)
            finished.append(main(["run", str(config), "--resume", str(run_dir)]))  # the other resume, to the end
        return real_lock(path, key)

    monkeypatch.setattr(outputs, "lock_run_dir", another_process_finishes_first)
    one_line_error(main, ["run", str(config), "--resume", str(run_dir)], capsys,
                   f"--resume: {run_dir}/checkpoint.pt changed while this run was being prepared (another process wrote it); "
                   f"nothing was written")
    assert finished == [0]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "complete" and results["completed_experiences"] == 3
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["completed"] == 3
    one_line_error(main, ["run", str(config), "--resume", str(run_dir)], capsys, f"--resume: {run_dir} already completed all 3 experiences")


def test_a_checkpoint_replaced_during_the_run_is_left_alone(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Belt and braces under the lock: before each save the run checks that the checkpoint is the one it
    last wrote; one put there by anything else is not overwritten."""
    import lifelong_moe.run_outputs as outputs

    path = write_config(tmp_path / "c.yaml", three_experiences(tmp_path / "runs"))
    run_dir = tmp_path / "runs" / "tiny" / "version_0"
    real_record = outputs.RunOutputs.record
    foreign: list[bytes] = []

    def record_then_someone_replaces_it(self: Any, *args: Any) -> None:
        real_record(self, *args)
        if not foreign:  # after experience 1, another writer puts its own file there (a new inode)
            foreign.append((self.run_dir / "checkpoint.pt").read_bytes())
            (self.run_dir / "other.pt").write_bytes(foreign[0])
            os.replace(self.run_dir / "other.pt", self.run_dir / "checkpoint.pt")

    monkeypatch.setattr(outputs.RunOutputs, "record", record_then_someone_replaces_it)
    one_line_error(main, ["run", str(path)], capsys, f"{run_dir}/checkpoint.pt was replaced by something other than this run",
                   f"{run_dir} keeps 1 completed experience(s)")
    assert (run_dir / "checkpoint.pt").read_bytes() == foreign[0]


@pytest.mark.slow
def test_two_resumes_started_together_end_with_one_complete_run(tmp_path: Path, capsys: Any) -> None:
    """Two real processes: one resumes and trains; the other, started while it runs, is refused (the
    directory is held, or was written meanwhile, or is complete by then). Either way the run ends
    complete, 3 of 3, and its checkpoint holds 3."""
    config, run_dir = crashed(tmp_path, three_experiences(tmp_path / "runs", epochs=20))
    first = subprocess.Popen([sys.executable, "-m", "lifelong_moe.cli", "run", str(config), "--resume", str(run_dir)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None and (run_dir / LOCK_FILE).read_text().strip() != str(first.pid):
        time.sleep(0.05)
    line = one_line_error(main, ["run", str(config), "--resume", str(run_dir)], capsys, "--resume:")
    assert any(reason in line for reason in (f"(pid {first.pid})", "changed while this run was being prepared",
                                             "already completed all 3 experiences")), line
    assert first.wait(timeout=600) == 0, first.stderr.read()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "complete" and results["completed_experiences"] == 3
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["completed"] == 3


# ---- resuming a run that read users' folders through a frozen encoder --------------------------------

@pytest.fixture(scope="module")
def crashed_hf(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A run on a folder of images through a Hugging Face ViT, stopped after its first of two experiences:
    (config, run dir, base folder)."""
    base = tmp_path_factory.mktemp("crashed_hf")
    cfg = three_experiences(base / "runs")
    cfg["stream"] = {"scenario": "class_incremental", "split": {"source": "imgs", "n_experiences": 2},
                     "sources": {"imgs": {"kind": "image_folder", "params": {"root": str(D.image_folder(base / "img")), "size": [16, 16]}}}}
    cfg["pretrained"] = {"image": {"kind": "hf", "weights": str(D.hf_image_model(base / "vit"))}}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIFELONG_MOE_CACHE", str(base / "cache"))
        path, run_dir = crashed(base, cfg)
        yield path, run_dir, base


def _same_size_and_mtime(path: Path, content: bytes) -> None:
    st = path.stat()
    assert len(content) == st.st_size
    path.write_bytes(content)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_resume_refuses_code_added_to_the_encoder_folder_and_changed_pixels(crashed_hf: tuple[Path, Path, Path], capsys: Any) -> None:
    """After the crash: a module dropped into the weights folder is refused (no code runs, even on resume);
    an image rewritten with its old size and mtime is seen as changed (content, not mtime, keys the decode
    cache). Restored, the resume completes."""
    config, run_dir, base = crashed_hf
    before = _scan(run_dir)
    resume = ["run", str(config), "--resume", str(run_dir)]
    (base / "vit" / "modeling_extra.py").write_text("import os\nos.mkdir('/tmp/lifelong-moe-battery-resume-code-ran')\n")
    one_line_error(main, resume, capsys, f"pretrained.image.weights: {base / 'vit'} holds Python code (modeling_extra.py)")
    (base / "vit" / "modeling_extra.py").unlink()
    image = sorted((base / "img").rglob("*.png"))[1]
    original = image.read_bytes()
    _same_size_and_mtime(image, _recolour(original))
    one_line_error(main, resume, capsys, "--resume: stream.sources.imgs: its data changed since the checkpoint was written")
    _same_size_and_mtime(image, original)
    assert _scan(run_dir) == before
    assert not Path("/tmp/lifelong-moe-battery-resume-code-ran").exists()
    assert main(resume) == 0, capsys.readouterr().err
    assert json.loads((run_dir / "results.json").read_text())["status"] == "complete"


def _recolour(png: bytes) -> bytes:
    """The same PNG with other pixels and exactly as many bytes (an uncompressed re-encoding, padded)."""
    import io

    from PIL import Image, ImageOps

    for level in range(10):
        buf = io.BytesIO()
        with Image.open(io.BytesIO(png)) as img:
            ImageOps.invert(img.convert("RGB")).convert(img.mode).save(buf, format="PNG", compress_level=level)
        data = buf.getvalue()
        if len(data) <= len(png):  # padded after IEND, where PNG readers stop
            return data + b"\0" * (len(png) - len(data))
    raise AssertionError("could not re-encode within the original size")


# ---- the decode cache keys on content --------------------------------------------------------------

def _load(kind: str, params: dict[str, Any]) -> Any:
    from lifelong_moe.registry import resolve_params
    from scenarios.sources import SOURCES, load_source

    return load_source(kind, resolve_params(SOURCES, kind, params, "params"), 0)


def test_the_decode_cache_sees_a_file_rewritten_with_its_size_and_mtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same size, same mtime, other content: an image (BMP: size fixed by the dimensions) and a WAV clip
    decode afresh, in a new process (the on-disk cache) and in this one (its memo of hashes)."""
    from PIL import Image

    from scenarios import cache

    monkeypatch.setenv("LIFELONG_MOE_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "img"
    for c, name in enumerate(("ant", "bee")):
        (root / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(D.class_image(c, i)).save(root / name / f"{i}.bmp")
    params = {"root": str(root), "size": [12, 16], "fit": "stretch", "test_fraction": 0.5}
    first = _load("image_folder", params)
    target = root / "ant" / "0.bmp"
    black = tmp_path / "black.bmp"
    Image.new("RGB", (16, 12)).save(black)
    _same_size_and_mtime(target, black.read_bytes())
    for memo in ("kept", "cleared"):  # this process, then as a new one would
        if memo == "cleared":
            cache._FILE_HASHES.clear()
        second = _load("image_folder", params)
        pool = np.concatenate([second.train.inputs["image"], second.test.inputs["image"]])
        assert (pool.reshape(len(pool), -1).max(axis=1) == 0).sum() == 1, memo  # the black image is there
        assert not np.array_equal(np.concatenate([first.train.inputs["image"], first.test.inputs["image"]]), pool)

    aud = D.audio_folder(tmp_path / "aud", n_per_class=4, rates=(8000,))
    clip = sorted(aud.rglob("*.wav"))[0]
    a = _load("audio_folder", {"root": str(aud), "sample_rate": 8000, "features": "waveform", "test_fraction": 0.5})
    import soundfile as sf

    wave, rate = sf.read(clip, dtype="int16")
    buf = tmp_path / "quiet.wav"
    sf.write(buf, (wave // 2).astype(np.int16), rate, subtype="PCM_16")
    _same_size_and_mtime(clip, buf.read_bytes())
    b = _load("audio_folder", {"root": str(aud), "sample_rate": 8000, "features": "waveform", "test_fraction": 0.5})
    assert not np.array_equal(np.concatenate([a.train.inputs["audio"], a.test.inputs["audio"]]),
                              np.concatenate([b.train.inputs["audio"], b.test.inputs["audio"]]))


# ---- the modes files are written with ----------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask 022", "umask 027"])
def test_run_files_get_the_users_umask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask: int) -> None:
    """checkpoint.pt, results.json, config.yaml, accuracy_matrix.csv, figures and cache entries are made
    as a plain open() makes files (0666 less the umask), as TensorBoard's event files are: not 0600."""
    monkeypatch.setenv("LIFELONG_MOE_CACHE", str(tmp_path / "cache"))
    cfg = tiny_config(tmp_path / "runs", train={"epochs": 1, "batch_size": 16, "lr": 0.01})
    cfg["stream"]["sources"] = {"syn": cfg["stream"]["sources"]["syn"],
                                "pics": {"kind": "image_folder", "params": {"root": str(D.image_folder(tmp_path / "img")), "size": [8, 8]}}}
    cfg["stream"]["split"] = {"source": "pics", "n_experiences": 2}
    old = os.umask(umask)
    try:
        result = run(config_from_dict(cfg), progress=lambda s: None)
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    names = ["checkpoint.pt", "results.json", "config.yaml", "accuracy_matrix.csv", "accuracy_matrix.png", LOCK_FILE]
    modes = {n: stat.S_IMODE((result.run_dir / n).stat().st_mode) for n in names}
    modes.update({p.name: stat.S_IMODE(p.stat().st_mode) for p in result.run_dir.glob("events.out.tfevents.*")})
    modes.update({p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "cache").rglob("*.npz")})
    assert len(modes) > len(names) + 1
    assert all(m == expected for m in modes.values()), {n: oct(m) for n, m in modes.items() if m != expected}


def test_hf_dataset_with_audio_is_written_and_read_without_torchcodec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`datasets` encodes an Audio column with torchcodec, which no extra installs. The layout that needs
    nothing: each clip's file bytes in a Value('binary') column (images too). Written and read with
    torchcodec unimportable, the clips decode as the same files do from a folder."""
    import datasets

    monkeypatch.setitem(sys.modules, "torchcodec", None)  # import torchcodec -> ImportError
    monkeypatch.setattr(datasets.config, "TORCHCODEC_AVAILABLE", False)
    monkeypatch.setenv("LIFELONG_MOE_CACHE", str(tmp_path / "cache"))
    aud = D.audio_folder(tmp_path / "aud", n_per_class=4, rates=(8000,))
    clips = sorted(p for p in aud.rglob("*") if p.is_file())  # WAV and FLAC, in the folder source's order
    rows = {"speech": [p.read_bytes() for p in clips], "label": [p.parent.name for p in clips], "uid": [p.stem for p in clips]}
    features = datasets.Features({"speech": datasets.Value("binary"), "label": datasets.Value("string"), "uid": datasets.Value("string")})
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "ds"))
    prep = {"sample_rate": 8000, "features": "logmel"}
    from_ds = _load("hf_dataset", {"path": str(tmp_path / "ds"), "columns": {"audio": {"column": "speech", "kind": "audio"}},
                                   "id_column": "uid", "audio": prep, "audio_standardize": False, "test_fraction": 0.5})
    from_folder = _load("audio_folder", {"root": str(aud), "standardize": False, "test_fraction": 0.5, **prep})
    np.testing.assert_array_equal(from_ds.train.labels, from_folder.train.labels)
    np.testing.assert_allclose(from_ds.train.inputs["audio"], from_folder.train.inputs["audio"], rtol=0, atol=0)
    assert "torchcodec" not in {m.split(".")[0] for m in sys.modules if sys.modules[m] is not None}
