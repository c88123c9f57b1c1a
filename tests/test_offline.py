"""Nothing touches the network: the test session blocks sockets to other hosts (here and in Python
subprocesses), runs Hugging Face offline, and a load that would need the hub fails with one line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from conftest import netguard


def test_sockets_to_other_hosts_fail_here():
    with pytest.raises(netguard.NetworkBlockedError, match="network access blocked"):
        socket.create_connection(("198.51.100.7", 443), timeout=1)
    with socket.socket() as raw, pytest.raises(netguard.NetworkBlockedError, match="connect to"):
        raw.connect(("198.51.100.7", 443))
    with pytest.raises(netguard.NetworkBlockedError, match=r"DNS lookup of 'huggingface\.co'"):
        socket.getaddrinfo("huggingface.co", 443)
    server = socket.socket()  # local traffic (DDP's rendezvous) still works
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    with socket.create_connection(server.getsockname(), timeout=1):
        pass
    server.close()


def test_sockets_to_other_hosts_fail_in_subprocesses():
    code = "import socket; socket.create_connection(('198.51.100.7', 443), timeout=1)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy())
    assert proc.returncode != 0 and "NetworkBlockedError: network access blocked in tests" in proc.stderr


def test_hugging_face_runs_offline():
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
    from huggingface_hub import constants
    from transformers import AutoConfig

    assert constants.is_offline_mode()
    # a hub name fails at once from the offline flag, not by trying (the guard would raise NetworkBlockedError)
    with pytest.raises(OSError) as err:
        AutoConfig.from_pretrained("google-bert/bert-base-uncased")
    assert not isinstance(err.value, netguard.NetworkBlockedError)
    assert "NetworkBlockedError" not in repr(err.value.__context__)


def test_a_load_that_needs_the_hub_is_one_line(tmp_path, capsys):
    from test_pretrained import config, image_source

    import datafiles as D
    from lifelong_moe.cli import main

    cfg = config(tmp_path, {"mine": image_source(D.image_folder(tmp_path / "img"))},
                 {"image": {"kind": "hf", "weights": "openai/clip-vit-base-patch32"}})
    assert main(["run", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lifelong-moe: error: pretrained.image.weights: not found: openai/clip-vit-base-patch32")
    assert "nothing is downloaded" in err and "\n" not in err and "Traceback" not in err
    # a local folder whose files are not all there fails the same way (no fallback to the hub)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text('{"model_type": "vit"}')
    cfg = config(tmp_path, {"mine": image_source(tmp_path / "img")}, {"image": {"kind": "hf", "weights": str(tmp_path / "half")}})
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"pretrained.image.weights: cannot load a model from {tmp_path / 'half'}" in err and "\n" not in err


def test_offline_flag_reaches_an_already_imported_hub(monkeypatch):
    from huggingface_hub import constants

    from lifelong_moe.offline import hf_offline

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # as if imported before the variables were set
    hf_offline()
    assert constants.is_offline_mode()
