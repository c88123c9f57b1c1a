"""Bad-input battery, checkpoint family: `--resume` given damaged, foreign, old, tampered or malicious
checkpoints, or changed data. Each is refused through the real CLI with one line and exit code 2; the run
directory being resumed stays byte-identical (no events file added), as does the earlier run; a checkpoint
carrying a pickle payload is refused without the payload running."""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from battery import _scan, npz_config, one_line_error, save_npz, write_config
from lifelong_moe import config_from_dict, run
from lifelong_moe.checkpointing import CHECKPOINT, load_checkpoint
from lifelong_moe.cli import main
from lifelong_moe.errors import ConfigError

# one per test process: parallel workers must not see each other's control run make it
MARKER = Path(f"/tmp/lifelong-moe-battery-pickle-payload-ran-{os.getpid()}")


class Crash(Exception):
    pass


def _crash_after_first(line: str) -> None:
    if "experience 1/" in line:
        raise Crash(line)


class Payload:
    """Unpickling this calls os.mkdir(MARKER): what a crafted checkpoint could do with weights_only=False."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(MARKER),))


@pytest.fixture(scope="module")
def crashed(tmp_path_factory, earlier):
    """Two runs stopped after their first of two experiences (a resumable checkpoint each): one on the
    synthetic stream, one on .npz files. Returns {kind: (config path, run dir)}."""
    base = tmp_path_factory.mktemp("crashed")
    out = {}
    cfg = earlier.config(train={"epochs": 1, "batch_size": 16, "lr": 0.01})
    cfg["output"]["root"] = str(base / "runs")
    rng = np.random.default_rng(0)
    save_npz(base / "train.npz", n=16, x=rng.random((16, 3)).astype(np.float32), labels=np.arange(16) % 4)
    save_npz(base / "test.npz", n=8, x=rng.random((8, 3)).astype(np.float32), labels=np.arange(8) % 4)
    npz = npz_config(earlier, base, base / "train.npz", base / "test.npz", name="npz", train={"epochs": 1, "lr": 0.01})
    npz["output"]["root"] = str(base / "runs")
    for kind, c in (("synthetic", cfg), ("npz", npz)):
        path = write_config(base / f"{kind}.yaml", c)
        with pytest.raises(Crash):
            run(config_from_dict(c), progress=_crash_after_first)
        out[kind] = (path, base / "runs" / c["name"] / "version_0")
        assert json.loads((out[kind][1] / "results.json").read_text())["status"] == "failed"
    return out


def _payload(run_dir: Path) -> dict[str, Any]:
    return torch.load(run_dir / CHECKPOINT, weights_only=True)


def _save(run_dir: Path, obj: Any) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    (run_dir / CHECKPOINT).write_bytes(buf.getvalue())


def edited(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    """Rewrite the checkpoint with `change` applied to its content."""

    def tamper(run_dir: Path) -> None:
        payload = _payload(run_dir)
        result = change(payload)
        _save(run_dir, payload if result is None else result)

    return tamper


def raw(data: bytes) -> Callable[[Path], None]:
    return lambda run_dir: (run_dir / CHECKPOINT).write_bytes(data)


def truncated(run_dir: Path) -> None:
    data = (run_dir / CHECKPOINT).read_bytes()
    (run_dir / CHECKPOINT).write_bytes(data[: len(data) // 2])


def with_payload(run_dir: Path) -> None:
    payload = _payload(run_dir)
    payload["reports"] = [Payload()]
    _save(run_dir, payload)


def format_one(run_dir: Path) -> None:
    """As lifelong-moe wrote checkpoints before: numpy's RNG state pickled as a numpy array."""
    payload = _payload(run_dir)
    payload["format"] = 1
    payload["rng"]["numpy"] = np.random.get_state()
    _save(run_dir, payload)


def as_directory(run_dir: Path) -> None:
    (run_dir / CHECKPOINT).unlink()
    (run_dir / CHECKPOINT).mkdir()


def missing(run_dir: Path) -> None:
    (run_dir / CHECKPOINT).unlink()


def to_dev_zero(run_dir: Path) -> None:
    (run_dir / CHECKPOINT).unlink()
    os.symlink("/dev/zero", run_dir / CHECKPOINT)


def wrong_shapes(p: dict[str, Any]) -> None:
    name = next(iter(p["model"]))
    p["model"][name] = torch.zeros(*(s + 1 for s in p["model"][name].shape))


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda p: p.__setitem__(key, value)


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    def change(p: dict[str, Any]) -> None:
        del p[key]

    return change


CP = "{run_dir}/checkpoint.pt"
CASES: list[tuple[str, Callable[[Path], None], tuple[str, ...]]] = [
    ("pickle payload", with_payload, (f"--resume: {CP} was refused: it holds objects other than tensors and plain data", "nothing in it was run")),
    ("format 1 (numpy objects)", format_one, (f"--resume: {CP} was refused", "format 1")),
    ("truncated", truncated, (f"--resume: {CP} is unreadable",)),
    ("empty", raw(b""), (f"--resume: {CP} is unreadable",)),
    ("text", raw(b"this is not a checkpoint\n"), (f"--resume: {CP} is unreadable",)),
    ("JSON", raw(json.dumps({"format": 3, "completed": 1}).encode()), (f"--resume: {CP} is unreadable",)),
    ("a saved list", edited(lambda p: [1, 2, 3]), (f"--resume: {CP} is not a lifelong-moe checkpoint",)),
    ("a saved tensor", edited(lambda p: torch.zeros(3)), (f"--resume: {CP} is not a lifelong-moe checkpoint",)),
    ("format 2 (before the gate refactor)", edited(_set("format", 2)), (f"--resume: {CP} is a checkpoint of format 2",)),
    ("format 3 (float64 square covariances)", edited(_set("format", 3)), (f"--resume: {CP} is a checkpoint of format 3",)),
    ("format 5", edited(_set("format", 5)), (f"--resume: {CP} is a checkpoint of format 5",)),
    ("no weights", edited(_drop("model")), (f"--resume: {CP} is not a complete lifelong-moe checkpoint (no 'model')",)),
    ("no data fingerprints", edited(_drop("data_files")), (f"--resume: {CP} is not a complete lifelong-moe checkpoint (no 'data_files')",)),
    ("completed as text", edited(_set("completed", "1")), (f"--resume: {CP} has a malformed 'completed' (str)",)),
    ("completed as a boolean", edited(_set("completed", True)), (f"--resume: {CP} has a malformed 'completed' (bool)",)),
    ("zero completed", edited(_set("completed", 0)), (f"--resume: {CP} records 0 completed experiences",)),
    ("more completed than the stream has", edited(_set("completed", 99)), ("--resume: {run_dir}'s checkpoint does not fit this stream of 2 experiences",)),
    ("R of the wrong size", edited(_set("R", [[0.5]])), ("--resume: {run_dir}'s checkpoint does not fit this stream of 2 experiences",)),
    ("weights as numbers", edited(lambda p: p["model"].__setitem__(next(iter(p["model"])), 3)), (f"--resume: {CP} has a malformed 'model'",)),
    ("weights of the wrong shape", edited(wrong_shapes), ("--resume: {run_dir}'s checkpoint does not fit the model (RuntimeError",)),
    ("an unknown weight", edited(lambda p: p["model"].__setitem__("intruder.weight", torch.zeros(2))), ("--resume: {run_dir}'s checkpoint does not fit the model",)),
    ("broken structure", edited(_set("structure", {})), ("--resume: {run_dir}'s checkpoint does not fit the model (KeyError",)),
    ("short numpy RNG state", edited(lambda p: p["rng"]["numpy"].__setitem__("key", [1, 2, 3])), ("--resume: {run_dir}'s checkpoint does not fit the model",)),
    ("checkpoint is a directory", as_directory, (f"--resume: {CP} is not a file",)),
    ("checkpoint missing", missing, (f"--resume: {CP} not found",)),
    ("checkpoint links to /dev/zero", to_dev_zero, (f"--resume: {CP} is not a file",)),
]


@pytest.mark.parametrize("name,tamper,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_checkpoint_is_refused(earlier, crashed, tmp_path, capsys, name, tamper, expected):
    config, original = crashed["synthetic"]
    run_dir = tmp_path / "version_0"
    shutil.copytree(original, run_dir, symlinks=True)
    tamper(run_dir)
    before = _scan(run_dir)
    one_line_error(main, ["run", str(config), "--resume", str(run_dir)], capsys, *(e.format(run_dir=run_dir) for e in expected))
    assert _scan(run_dir) == before  # nothing added (no events file), nothing changed
    assert not MARKER.exists()
    earlier.assert_untouched()


def test_pickle_payload_does_not_run_through_the_library(crashed, tmp_path):
    run_dir = tmp_path / "version_0"
    shutil.copytree(crashed["synthetic"][1], run_dir)
    with_payload(run_dir)
    with pytest.raises(ConfigError, match="nothing in it was run"):
        load_checkpoint(run_dir)
    assert not MARKER.exists()
    with pytest.raises(OSError):  # control: the same file loaded the unsafe way does run the payload
        torch.load(run_dir / CHECKPOINT, weights_only=False)
        torch.load(run_dir / CHECKPOINT, weights_only=False)  # second call: mkdir of an existing marker fails
    assert MARKER.exists()
    MARKER.rmdir()


def changed_data(crashed: dict[str, Any], tmp: Path) -> list[str]:
    config, run_dir = crashed["npz"]
    train = Path(_config_dict(config)["stream"]["sources"]["mine"]["params"]["train"])
    data = np.load(train)
    x = data["x"].copy()
    x[0, 0] += 1.0  # same size, same shapes: only the content changed
    np.savez(train, x=x, labels=data["labels"])
    return [str(config), "--resume", str(run_dir)]


def _config_dict(path: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(path.read_text())


RESUME_CASES = [
    ("another config", lambda c, t: [str(c["synthetic"][0]), "seed=5", "--resume", str(c["synthetic"][1])],
     ("--resume: {synthetic} was made by another config (it differs at seed)",)),
    ("a finished run", lambda c, t: [str(c["synthetic"][0]), "--resume", "{earlier}", "train.epochs=1"],
     ("--resume: {earlier} already completed all 2 experiences",)),
    ("nowhere", lambda c, t: [str(c["synthetic"][0]), "--resume", str(t / "nowhere")], ("--resume: no run directory at {tmp}/nowhere",)),
    ("a file", lambda c, t: [str(c["synthetic"][0]), "--resume", str(c["synthetic"][0])], ("--resume: no run directory at",)),
    ("empty", lambda c, t: [str(c["synthetic"][0]), "--resume", ""], ("--resume: the run directory is empty",)),
    ("an Avalanche baseline", lambda c, t: [str(c["synthetic"][0]), "strategy.name=ewc", "--resume", str(c["synthetic"][1])],
     ("--resume: Avalanche baselines keep their state in Avalanche plugins",)),
    ("changed data", changed_data, ("--resume: stream.sources.mine.params.train: {npz_train} changed since the checkpoint was written",)),
]


@pytest.mark.parametrize("name,build,expected", RESUME_CASES, ids=[c[0] for c in RESUME_CASES])
def test_bad_resume_is_refused(earlier, crashed, tmp_path, capsys, name, build, expected):
    before = {k: _scan(v[1]) for k, v in crashed.items()}
    argv = [a.replace("{earlier}", str(earlier.run_dir)) for a in build(crashed, tmp_path)]
    where = {"synthetic": crashed["synthetic"][1], "earlier": earlier.run_dir, "tmp": tmp_path,
             "npz_train": crashed["npz"][1].parent.parent.parent / "train.npz"}
    one_line_error(main, ["run", *argv], capsys, *(e.format(**where) for e in expected))
    assert {k: _scan(v[1]) for k, v in crashed.items()} == before
    earlier.assert_untouched()


def test_resume_still_works_after_the_refusals(crashed, capsys):
    """The refusals above left the crashed run resumable: it completes through the CLI."""
    config, run_dir = crashed["synthetic"]
    assert main(["run", str(config), "--resume", str(run_dir)]) == 0, capsys.readouterr().err
    assert json.loads((run_dir / "results.json").read_text())["status"] == "complete"


@pytest.fixture(scope="module")
def crashed_folder(tmp_path_factory, earlier):
    """A run on a folder of images through a frozen timm encoder, stopped after its first of two
    experiences: (config path, run dir, data folder)."""
    import datafiles as D

    base = tmp_path_factory.mktemp("crashed_folder")
    cfg = earlier.config(name="folder", train={"epochs": 1, "batch_size": 16, "lr": 0.01})
    cfg["output"]["root"] = str(base / "runs")
    cfg["stream"]["sources"] = {"imgs": {"kind": "image_folder", "params": {"root": str(D.image_folder(base / "img")), "size": [16, 16]}}}
    cfg["stream"]["split"] = {"source": "imgs", "n_experiences": 2}
    cfg["pretrained"] = {"image": {"kind": "timm", "name": "test_vit", "weights": str(D.timm_weights(base / "vit.safetensors")),
                                   "params": {"image_size": [32, 32], "model_args": {"img_size": 32}}}}
    path = write_config(base / "folder.yaml", cfg)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIFELONG_MOE_CACHE", str(base / "cache"))  # features of its own: other tests expect a cold cache
        with pytest.raises(Crash):
            run(config_from_dict(cfg), progress=_crash_after_first)
        yield path, base / "runs" / "folder" / "version_0", base


def test_resume_refuses_a_changed_image_or_encoder_until_restored(earlier, crashed_folder, capsys):
    """Sources without one data file (here a folder of images) are fingerprinted by their arrays, and a
    pretrained encoder by its weights: a resume on either changed is refused, naming it."""
    from PIL import Image, ImageOps

    import datafiles as D

    config, run_dir, base = crashed_folder
    before = _scan(run_dir)
    resume = ["run", str(config), "--resume", str(run_dir)]
    image = sorted((base / "img").rglob("*.png"))[0]
    original = image.read_bytes()
    with Image.open(image) as img:
        ImageOps.invert(img.convert("RGB")).save(image)  # same file name, other pixels
    one_line_error(main, resume, capsys, "--resume: stream.sources.imgs: its data changed since the checkpoint was written")
    image.write_bytes(original)
    weights = base / "vit.safetensors"
    saved = weights.read_bytes()
    D.timm_weights(weights, seed=1)
    one_line_error(main, resume, capsys, f"--resume: pretrained.image.weights: {weights} changed since the checkpoint was written")
    weights.write_bytes(saved)
    assert _scan(run_dir) == before
    assert main(resume) == 0, capsys.readouterr().err
    assert json.loads((run_dir / "results.json").read_text())["status"] == "complete"
    earlier.assert_untouched()
