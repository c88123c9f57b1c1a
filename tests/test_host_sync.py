"""No host synchronisation in the MoE forward: evaluation (the gate, every layer, the routed head, both parts)
and a training step's forward, once the per-structure tables are built. On CPU the guard of `host_sync.py`
checks the calls made on the path a GPU takes with bfloat16 (grouped dispatch); with CUDA, the driver's own
check (`torch.cuda.set_sync_debug_mode("error")`) runs the same forward under bf16 autocast."""

from __future__ import annotations

import pytest
import torch
from host_sync import HostSyncGuard
from test_routed_dispatch import UNEVEN, trained


def _forwards(model, x):
    """An evaluation forward and a training forward (loss included) of the current experience."""
    with torch.no_grad():
        out = model.evaluation_step(x, None)
    model.train()
    labels = torch.zeros(len(x["m0"]), dtype=torch.long, device=x["m0"].device)
    loss, _ = model.training_loss(x, labels, labels)
    model.eval()
    return out, loss


def _to(batch, device):
    return {k: _to(v, device) for k, v in batch.items()} if isinstance(batch, dict) else batch.to(device)


def test_the_guard_catches_what_synchronises():
    x = torch.randn(5)
    for wait in (lambda: x.sum().item(), lambda: bool(x[0] > 0), lambda: x.nonzero(), lambda: x[x > 0],
                 lambda: torch.tensor([1.0, 2.0]), lambda: x.repeat_interleave(torch.ones(5, dtype=torch.long))):
        with pytest.raises(AssertionError, match="host synchronisation"), HostSyncGuard():
            wait()
    with HostSyncGuard() as guard:
        x.argsort(), x.topk(2), torch.zeros(3).index_add_(0, torch.zeros(5, dtype=torch.long), x)
    assert guard.calls >= 3


@pytest.mark.parametrize("conditional", ["current", "frozen"])
def test_moe_forward_on_the_gpu_path_never_waits_for_the_host(tmp_path, conditional):
    model, x = trained(tmp_path, UNEVEN, conditional=conditional)
    for layer in model.layers:
        layer.dispatch_path = "grouped"  # what CUDA runs under bf16: offsets stay on the device
    expected, _ = _forwards(model, x)  # builds the tables once (a growth or a move rebuilds them)
    with HostSyncGuard() as guard:
        out, loss = _forwards(model, x)
    assert guard.calls > 100 and torch.isfinite(loss)
    assert torch.allclose(out.logits, expected.logits) and out.parts.keys() == {"statistics", "experts"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA; the CPU test above checks the same path's calls")
def test_moe_forward_on_cuda_bf16_never_synchronises(tmp_path):
    model, x = trained(tmp_path, UNEVEN, conditional="current")
    model, x = model.cuda(), _to(x, "cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        expected, _ = _forwards(model, x)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            out, loss = _forwards(model, x)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss) and (out.logits.argmax(1) == expected.logits.argmax(1)).float().mean() > 0.95
