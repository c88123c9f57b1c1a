"""No code and no network from what a config points at, checked from outside the process.

- A weights folder that asks for its own code (`auto_map` + modules beside the weights) is refused in
  one line: the CLI never prompts, and nothing of the folder runs, whether stdin answers `y` or is closed.
- Every encoder path (timm, torchvision, Hugging Face image, text and audio; and the names that would
  download: detection and segmentation builders, hub references) runs in a new network namespace
  (`unshare -rn`: no interface but loopback) under `strace`, with the tests' Python-level socket guard
  and the offline variables removed: the trace must show no connect or send to any address but loopback.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import datafiles as D
from conftest import NETGUARD, tiny_config, write_yaml
from lifelong_moe.offline import OFFLINE_ENV

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "lifelong_moe.cli"]
PROMPTS = ("Do you wish to run the custom code", "[y/N]", "which must be executed", "trust_remote_code=True")  # transformers' prompt


def _env(tmp: Path, guarded: bool = True) -> dict[str, str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "LIFELONG_MOE_CACHE": str(tmp / "cache")}
    if not guarded:  # the OS is the guard: no Python-level socket patch, no offline switches set for the CLI
        env["PYTHONPATH"] = os.pathsep.join(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p) != NETGUARD)
        for key in OFFLINE_ENV:
            env.pop(key, None)
    return env


def _config(tmp: Path, sources: dict[str, Any], pretrained: dict[str, Any], name: str = "c", **extra: Any) -> Path:
    cfg = tiny_config(tmp / "runs", train={"epochs": 1, "batch_size": 8, "lr": 0.01}, evaluate_untrained=False,
                      modality_eval={"subsets": False, "single_each_experience": False, "missing_rates": []}, **extra)
    cfg["stream"]["sources"] = sources
    cfg["stream"]["split"] = {"source": next(iter(sources)), "n_experiences": 2}
    cfg["pretrained"] = pretrained
    cfg["output"]["plots"] = False
    return write_yaml(tmp / f"{name}.yaml", cfg)


def _images(tmp: Path) -> dict[str, Any]:
    root = tmp / "img" if (tmp / "img").exists() else D.image_folder(tmp / "img")
    return {"mine": {"kind": "image_folder", "params": {"root": str(root), "size": [16, 16]}}}


@pytest.mark.parametrize("stdin", ["y", "closed"])
def test_a_folder_with_code_never_prompts_and_never_runs(tmp_path: Path, stdin: str) -> None:
    marker = tmp_path / "code_ran"
    folder = D.remote_code_model(tmp_path / "shady", marker)
    cfg = _config(tmp_path, _images(tmp_path), {"image": {"kind": "hf", "weights": str(folder)}})
    if stdin == "y":
        proc = subprocess.run([*CLI, "run", str(cfg)], input="y\n" * 8, capture_output=True, text=True, env=_env(tmp_path), timeout=300)
    else:  # file descriptor 0 closed: a prompt could neither be shown an answer nor block
        proc = subprocess.run([*CLI, "run", str(cfg)], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              env=_env(tmp_path), timeout=300, preexec_fn=lambda: os.close(0))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert lines == [f"lifelong-moe: error: pretrained.image.weights: {folder} holds Python code (configuration_shady.py); "
                     f"lifelong-moe never runs code from a weights folder: use a model or tokenizer that transformers implements, "
                     f"saved without custom code"], proc.stderr
    assert not any(p in proc.stdout + proc.stderr for p in PROMPTS), proc.stdout + proc.stderr
    assert not marker.exists(), "code from the weights folder ran"
    assert not (tmp_path / "runs").exists()


def _tools() -> list[str]:
    """The command prefix that cuts this process off the network and records every connect and send."""
    missing = [tool for tool in ("unshare", "strace") if shutil.which(tool) is None]
    assert not missing, f"this test needs {', '.join(missing)} (util-linux, strace): the check must run at the OS level"
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True, text=True)
    assert probe.returncode == 0, f"unshare -rn (a network namespace) does not work here: {probe.stderr.strip()}"
    return ["unshare", "-rn", "strace", "-f", "-qq", "--seccomp-bpf", "-e", "trace=connect,sendto,sendmsg,sendmmsg", "-e", "signal=none"]


_ADDRESS = re.compile(r'inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)"')


def _outside_connections(trace: Path) -> list[str]:
    """Trace lines that reach an IPv4 or IPv6 address other than loopback (Unix sockets are local)."""
    out = []
    for line in trace.read_text().splitlines():
        for v4, v6 in _ADDRESS.findall(line):
            address = ipaddress.ip_address(v4 or v6)
            if not (address.is_loopback or address.is_unspecified):
                out.append(line)
    return out


def test_every_encoder_path_opens_no_connection(tmp_path: Path) -> None:
    prefix = _tools()
    img, aud = D.image_folder(tmp_path / "img"), D.audio_folder(tmp_path / "aud", rates=(8000,))
    bert = D.hf_text_model(tmp_path / "bert")
    csv_path = D.csv_table(tmp_path / "t.csv", n_per_class=6)
    picture = {"kind": "image_folder", "params": {"root": str(img), "size": [16, 16]}}

    def shot(modality: str) -> dict[str, Any]:
        return {"kind": "image_folder", "params": {"root": str(img), "size": [16, 16], "modality": modality}}

    every = {"av": {"kind": "paired", "params": {"by": "id", "missing": "drop", "sources": {
        "timm": shot("image"), "tv": shot("photo"), "hf": shot("shot"),
        "sound": {"kind": "audio_folder", "params": {"root": str(aud), "sample_rate": 8000, "duration": 0.25, "features": "waveform"}},
        "table": {"kind": "csv", "params": {"path": str(csv_path), "text": ["note"], "numeric": ["height"], "ignore": ["weight"], "id_column": "id",
                                            "tokenizer": {"kind": "hf", "path": str(bert), "max_length": 12}}}}}}}
    encoders = {
        "image": {"kind": "timm", "name": "test_vit", "weights": str(D.timm_weights(tmp_path / "vit.safetensors")),
                  "params": {"image_size": [32, 32], "model_args": {"img_size": 32}}},
        "photo": {"kind": "torchvision", "name": "shufflenet_v2_x0_5", "weights": str(D.torchvision_weights(tmp_path / "sn.pth")),
                  "params": {"image_size": [32, 32]}},
        "shot": {"kind": "hf", "weights": str(D.hf_image_model(tmp_path / "vit"))},
        "audio": {"kind": "hf", "weights": str(D.hf_audio_model(tmp_path / "w2v"))},
        "note": {"kind": "hf", "weights": str(bert), "params": {"pool": "mean"}},
    }
    trace = tmp_path / "run.trace"
    proc = subprocess.run([*prefix, "-o", str(trace), *CLI, "run", str(_config(tmp_path, every, encoders, name="every"))],
                          capture_output=True, text=True, env=_env(tmp_path, guarded=False), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    computed = [line for line in proc.stdout.splitlines() if "computed and cached" in line]
    assert sorted(line.split("pretrained ")[1].split(" ")[0] for line in computed) == sorted(encoders), proc.stdout
    assert not _outside_connections(trace), _outside_connections(trace)[:5]

    # names that would download, each refused in one line before anything is built
    refused = {
        "detection": {"image": {"kind": "torchvision", "name": "fasterrcnn_resnet50_fpn", "weights": encoders["photo"]["weights"]}},
        "segmentation": {"image": {"kind": "torchvision", "name": "deeplabv3_resnet50", "weights": encoders["photo"]["weights"]}},
        "backbone weights": {"image": {"kind": "torchvision", "name": "resnet18", "weights": encoders["photo"]["weights"],
                                       "params": {"model_args": {"weights_backbone": "DEFAULT"}}}},
        "timm hub name": {"image": {"kind": "timm", "name": "hf-hub:timm/vit_tiny_patch16_224.augreg_in21k", "weights": encoders["image"]["weights"]}},
        "timm pretrained": {"image": {"kind": "timm", "name": "resnet18", "weights": encoders["image"]["weights"], "params": {"model_args": {"pretrained": True}}}},
        "hf hub name": {"image": {"kind": "hf", "weights": "google/vit-base-patch16-224"}},
        "hf hub code": {"image": {"kind": "hf", "weights": str(_hub_code(tmp_path))}},
    }
    configs = [str(_config(tmp_path, {"mine": picture}, pre, name=f"refused{i}")) for i, pre in enumerate(refused.values())]
    driver = ("import json, sys\nfrom lifelong_moe.cli import main\n"
              "print(json.dumps([main(['validate', c]) for c in sys.argv[1:]]))\n")
    trace = tmp_path / "refused.trace"
    proc = subprocess.run([*prefix, "-o", str(trace), sys.executable, "-c", driver, *configs],
                          capture_output=True, text=True, env=_env(tmp_path, guarded=False), timeout=600)
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [2] * len(refused), proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("lifelong-moe: error:")]
    assert len(errors) == len(refused) and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert not _outside_connections(trace), _outside_connections(trace)[:5]


def test_the_trace_would_show_a_connection(tmp_path: Path) -> None:
    """The check above can fail: a process that does try to connect shows up in the same trace."""
    trace = tmp_path / "probe.trace"
    code = "import socket\ntry:\n    socket.create_connection(('198.51.100.7', 443), timeout=1)\nexcept OSError:\n    pass\n"
    subprocess.run([*_tools(), "-o", str(trace), sys.executable, "-c", code], env=_env(tmp_path, guarded=False), timeout=120)
    assert any("198.51.100.7" in line for line in _outside_connections(trace))


def _hub_code(tmp: Path) -> Path:
    """A model folder whose auto_map points at code on the hub (nothing beside the weights)."""
    folder = D.hf_image_model(tmp / "hubcode")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "someone/repo--modeling_x.XModel"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder
