"""The plain-torch MoE core: gates, auxiliary losses, sparse dispatch against a dense reference, growth."""

from __future__ import annotations

import pytest
import torch

from lifelong_moe.moe import (
    MLPExpert,
    MoELayer,
    TopKRouter,
    decide_growth,
    dense_reference,
    load_balancing_loss,
    router_z_loss,
    sparse_dispatch,
)


def test_topk_gates_count_and_normalisation():
    torch.manual_seed(0)
    router = TopKRouter(dim=8, k=3)
    router.add_columns(7)
    r = router(torch.randn(50, 8))
    assert r.topk_idx.shape == (50, 3) and r.probs.shape == (50, 7)
    assert torch.allclose(r.topk_weight.sum(1), torch.ones(50))
    assert (r.topk_weight > 0).all()
    assert all(len(set(row.tolist())) == 3 for row in r.topk_idx)  # k distinct experts
    # the chosen experts are the k largest logits
    assert torch.equal(r.topk_idx.sort(1).values, r.logits.topk(3, dim=1).indices.sort(1).values)


def test_router_respects_mask_and_bias():
    torch.manual_seed(0)
    router = TopKRouter(dim=4, k=2)
    router.add_columns(6)
    x = torch.randn(20, 4)
    allowed = torch.zeros(20, 6, dtype=torch.bool)
    allowed[:, 4:] = True
    r = router(x, allowed=allowed)
    assert set(r.topk_idx.unique().tolist()) <= {4, 5}
    bias = torch.zeros(20, 6)
    bias[:, 1] = 100.0
    assert (router(x, bias=bias).topk_idx == 1).any(1).all()


def test_load_balancing_loss_hand_computed():
    # 4 tokens, 2 experts, k=1: tokens 0,1,2 -> expert 0; token 3 -> expert 1
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.4, 0.6]])
    idx = torch.tensor([[0], [0], [0], [1]])
    # f = [3/4, 1/4]; P = [0.7, 0.3]; loss = 2 * (0.75*0.7 + 0.25*0.3) = 1.2
    assert load_balancing_loss(probs, idx, 2).item() == pytest.approx(1.2)
    uniform = torch.full((4, 2), 0.5)
    assert load_balancing_loss(uniform, torch.tensor([[0], [1], [0], [1]]), 2).item() == pytest.approx(1.0)


def test_router_z_loss_hand_computed():
    logits = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    # logsumexp = log 2 and 1 + log 2
    expected = (torch.log(torch.tensor(2.0)) ** 2 + (1 + torch.log(torch.tensor(2.0))) ** 2) / 2
    assert router_z_loss(logits).item() == pytest.approx(expected.item())


@pytest.mark.parametrize("path", ["loop", "padded", "grouped"])
@pytest.mark.parametrize("n_experts,k", [(1, 1), (4, 2), (16, 2), (7, 3)])
def test_sparse_dispatch_equals_dense_reference_forward_and_backward(n_experts, k, path):
    torch.manual_seed(n_experts)
    dtype, tol = (torch.float32, 1e-4) if path == "grouped" else (torch.float64, 1e-5)  # grouped matmuls have no float64
    experts = torch.nn.ModuleList(MLPExpert(12, 24) for _ in range(n_experts)).to(dtype)
    x = torch.randn(40, 12, dtype=dtype, requires_grad=True)
    idx = torch.stack([torch.randperm(n_experts)[:k] for _ in range(40)])
    w = torch.rand(40, k, dtype=dtype).softmax(1).requires_grad_(True)

    y, counts = sparse_dispatch(x, idx, w, experts, path=path)
    params = [x, w, *experts.parameters()]
    # an expert that received no token is not in the sparse graph at all: its gradient is zero
    grads = [g if g is not None else torch.zeros_like(p)
             for g, p in zip(torch.autograd.grad(y.pow(2).sum(), params, allow_unused=True), params)]
    y_ref = dense_reference(x, idx, w, experts)
    grads_ref = torch.autograd.grad(y_ref.pow(2).sum(), params)

    assert torch.allclose(y, y_ref, atol=tol)
    for g, g_ref in zip(grads, grads_ref):
        assert torch.allclose(g, g_ref, atol=tol)
    assert counts.tolist() == torch.bincount(idx.reshape(-1), minlength=n_experts).tolist()


def test_one_expert_moe_is_the_dense_mlp():
    torch.manual_seed(0)
    layer = MoELayer(dim=8, hidden=16, k=1)
    layer.grow(1, group=0)
    x = torch.randn(30, 8)
    expected = x + layer.pool.experts[0](layer.norm(x))
    assert torch.allclose(layer(x).hidden, expected, atol=1e-6)


def test_frozen_experts_get_no_weight_gradients():
    torch.manual_seed(0)
    layer = MoELayer(dim=8, hidden=16, k=2)
    layer.grow(2, group=0)
    layer.grow(2, group=1)
    for p in layer.pool.experts[:2].parameters():
        p.requires_grad_(False)
    layer(torch.randn(64, 8)).hidden.sum().backward()
    assert all(p.grad is None for p in layer.pool.experts[:2].parameters())
    assert any(p.grad is not None for p in layer.pool.experts[2:].parameters())


def test_growth_decisions():
    asked = []

    def closest() -> int:
        asked.append(1)
        return 1

    common = dict(experts_per_growth=2, max_experts=0, closest_group=closest)
    assert decide_growth("experience", n_groups=0, n_experts=0, new_modality=False, **common).grow
    assert decide_growth("experience", n_groups=1, n_experts=2, new_modality=False, **common).grow
    assert decide_growth("modality", n_groups=1, n_experts=2, new_modality=True, **common).grow
    assert asked == []  # the closest group is only asked for when a group is reused
    d = decide_growth("modality", n_groups=2, n_experts=4, new_modality=False, **common)
    assert not d.grow and d.reuse_group == 1 and "reusing group 1" in d.reason
    capped = decide_growth("experience", n_groups=2, n_experts=4, new_modality=False, **{**common, "max_experts": 4})
    assert not capped.grow and capped.reuse_group == 1 and "cap of 4 experts reached" in capped.reason
    assert decide_growth("experience", n_groups=2, n_experts=4, new_modality=False, **{**common, "max_experts": 6}).grow


def test_growth_follows_the_layer_device():
    layer = MoELayer(dim=8, hidden=16, k=2).to("meta")  # any device but the default one
    layer.grow(2, group=0)
    layer.grow(2, group=1)
    assert {p.device.type for p in layer.parameters()} == {"meta"}


def test_float64_inference_over_many_experts_takes_a_path_that_runs_it():
    """Many experts sharing few pairs pick the grouped path at inference; grouped matmuls take no float64."""
    torch.manual_seed(0)
    experts = [MLPExpert(16, 32).double() for _ in range(20)]
    x = torch.randn(40, 16, dtype=torch.float64)
    idx, w = torch.randint(0, 20, (40, 2)), torch.rand(40, 2, dtype=torch.float64)
    with torch.no_grad():
        y, _ = sparse_dispatch(x, idx, w, experts)
        torch.testing.assert_close(y, dense_reference(x, idx, w, experts))
