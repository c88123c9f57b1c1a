"""Dispatch by routed group: each sample runs only its routed experience's router columns, experts and head,
and gives what the dense-over-groups forward gave (every router column scored and masked, every head on
every sample), to float rounding: logits and both parts, on trained models and mixed batches."""

from __future__ import annotations

import pytest
import torch
from test_domain_statistics import domain_stream

from conftest import build_model_and_stream, tiny_config, train_experience
from lifelong_moe.models.moe_model import _mix
from lifelong_moe.moe import MoELayer
from lifelong_moe.moe.group_dispatch import default_group_path
from lifelong_moe.moe.groups import GroupRoute
from lifelong_moe.moe.segments import NEG, segment_logsumexp
from scenarios.modality import MASK_KEY

UNEVEN = {  # heads of 3, 2 and 1 classes: the per-sample head tables are padded
    "scenario": "class_incremental",
    "sources": {"s": {"kind": "synthetic", "params": {"n_classes": 6, "n_modalities": 2, "dim": 8, "n_train_per_class": 40,
                                                      "n_test_per_class": 12, "separation": 2.0, "noise": 1.0}}},
    "experiences": [{"source": "s", "classes": [0, 1, 2]}, {"source": "s", "classes": [3, 4]}, {"source": "s", "classes": [5]}],
}


def dense_over_groups(model, inputs):
    """The forward before dispatch by group (main at e65385e), written out as the reference: every router
    column scored and masked to the routed group, every head on every sample."""
    tokens, present = model.modality_tokens(inputs)
    exps = sorted(int(e) for e in model.heads)
    feats = model.statistics.featurize(inputs, present)
    log_pe = model.statistics.experience_log_posterior(feats, exps)
    routed = log_pe.argmax(1)
    sample_group = torch.as_tensor([model.experience_group[e] for e in exps])[routed]
    z, pres = torch.stack(list(tokens.values()), 1), torch.stack(list(present.values()), 1)
    token_sample, token_modality = pres.nonzero(as_tuple=True)
    h = z[token_sample, token_modality]
    allowed = (torch.as_tensor(model.expert_owner).unsqueeze(0) == sample_group.unsqueeze(1))[token_sample]
    for layer in model.layers:
        h = layer(h, allowed=allowed).hidden
    pooled = h.new_zeros(len(pres), h.shape[1]).index_add_(0, token_sample, h)
    pooled = model.final_norm(pooled / pres.sum(1, keepdim=True).clamp_min(1).to(h.dtype))
    heads = [model.heads[str(e)] for e in exps]
    col = torch.repeat_interleave(torch.arange(len(heads)), torch.tensor([len(h.classes) for h in heads]))
    classes = torch.cat([h.classes for h in heads])
    scores = pooled @ torch.cat([h.linear.weight for h in heads]).T + torch.cat([h.linear.bias for h in heads])
    experts = scores - segment_logsumexp(scores, col, len(heads)).gather(1, col.expand_as(scores))
    stat = model.statistics.conditional_log_posterior(feats)[:, torch.argsort(model.statistics.row_experience, stable=True)]
    on_routed = col.unsqueeze(0) == routed.unsqueeze(1)
    weight = model.frozen_weight[torch.as_tensor(exps)][col] if model.statistics.frozen else model.expert_weight
    mixed = torch.where(on_routed, _mix(stat, experts, weight), stat)
    by_class = lambda s: segment_logsumexp(s, classes, model.n_classes)  # noqa: E731
    parts = {"statistics": by_class(stat + log_pe[:, col]), "experts": by_class(experts.masked_fill(~on_routed, NEG))}
    return by_class(mixed + log_pe[:, col]), parts, routed


def trained(tmp_path, stream, **statistics):
    cfg = tiny_config(tmp_path, model={"name": "moe", "params": {"embed_dim": 16, "expert_hidden": 32, "statistics": statistics}})
    cfg["stream"] = stream
    cfg["train"]["epochs"] = 1
    cfg, s, model = build_model_and_stream(cfg)
    for i, exp in enumerate(s.train_stream):
        train_experience(cfg, model, exp, seed=i)
    model.eval()
    samples = [exp.dataset[i] for exp in s.test_stream for i in range(len(exp.dataset))]
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(0))  # experiences mixed in the batch
    x, _, _ = torch.utils.data.default_collate([samples[i] for i in order])
    return model, x


@pytest.mark.parametrize(("stream", "conditional"), [(UNEVEN, "current"), (UNEVEN, "frozen"), (domain_stream(), "frozen")],
                         ids=["uneven-current", "uneven-frozen", "domains-frozen"])
def test_routed_forward_equals_dense_over_groups(tmp_path, stream, conditional):
    model, x = trained(tmp_path, stream, conditional=conditional)
    missing = dict(x, **{MASK_KEY: {"m0": torch.arange(len(x["m0"])) % 3 != 0}})  # every third sample lacks m0
    with torch.no_grad():
        for inputs in (x, missing):
            logits, parts, routed = dense_over_groups(model, inputs)
            out = model.forward_outputs(inputs)
            assert len(routed.unique()) == len(model.heads)  # a mixed batch: every experience is routed to
            assert torch.equal(out.routed, torch.as_tensor(sorted(int(e) for e in model.heads))[routed])
            assert torch.allclose(out.logits, logits, atol=1e-4, rtol=1e-5)
            assert out.parts.keys() == parts.keys()
            for name, part in parts.items():
                assert torch.allclose(out.parts[name], part, atol=1e-4, rtol=1e-5), name
            assert (out.logits.argmax(1) == logits.argmax(1)).all()


def grown_layer(sizes, dim=8, hidden=16):
    """A layer whose groups hold `sizes` experts (unequal sizes pad the group table)."""
    torch.manual_seed(0)
    layer = MoELayer(dim=dim, hidden=hidden, k=2)
    for g, n in enumerate(sizes):
        layer.grow(n, group=g)
    return layer


@pytest.mark.parametrize(("sizes", "path"), [((2, 2, 2), None), ((2, 2, 2), "loop"), ((2, 2, 2), "padded"), ((2, 2, 2), "grouped"),
                                             ((3, 2, 4), None), ((3, 2, 4), "padded")])
def test_layer_routing_within_groups_equals_the_masked_router(sizes, path):
    """Equal groups of k experts run as one wide MLP per group (loop, padded or grouped matmuls); unequal ones
    through the per-expert dispatch: every path gives the masked router's outputs and gradients."""
    layer = grown_layer(sizes)
    layer.dispatch_path = path
    x = torch.randn(60, 8, requires_grad=True)
    token_group = torch.randint(len(sizes), (60,), generator=torch.Generator().manual_seed(1))
    owner = torch.as_tensor(layer.pool.owner)
    allowed = owner.unsqueeze(0) == token_group.unsqueeze(1)
    outs, grads = [], []
    for kwargs in ({"allowed": allowed}, {"route": GroupRoute(token_group)}):
        out = layer(x, **kwargs)
        loss = out.hidden.pow(2).mean() + out.balance_loss + out.z_loss
        grads.append(torch.autograd.grad(loss, [x, *layer.parameters()], allow_unused=True))
        outs.append(out)
    dense, grouped = outs
    assert torch.equal(dense.routing.topk_idx, grouped.routing.topk_idx)
    assert (owner[grouped.routing.topk_idx] == token_group.unsqueeze(1)).all()  # every slot within the token's group
    assert grouped.routing.logits.shape == (60, max(sizes))  # scored: the group's columns, not the pool's
    for a, b in ((dense.hidden, grouped.hidden), (dense.balance_loss, grouped.balance_loss), (dense.z_loss, grouped.z_loss),
                 (dense.counts, grouped.counts), (dense.routing.topk_weight, grouped.routing.topk_weight)):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)
    for a, b in zip(*grads, strict=True):
        assert (a is None) == (b is None) and (a is None or torch.allclose(a, b, atol=1e-6))


@pytest.mark.parametrize(("path", "dim", "hidden"), [("loop", 8, 16), ("padded", 8, 16), ("grouped", 8, 16), ("grouped", 6, 5)])
def test_tokens_sorted_once_by_group_give_the_same_layer_outputs(path, dim, hidden):
    """A forward sorts its tokens by group once (`GroupRoute.by_group`) and every layer cuts them by the
    counts: the outputs are the unsorted route's, in the sorted order, with and without gradients, and the
    masked router's (widths that are no multiple of 4 included: the grouped matmuls pad them)."""
    layer = grown_layer((2, 2, 2, 2), dim, hidden)
    layer.dispatch_path = path
    x = torch.randn(50, dim)
    token_group = torch.tensor([3, 0, 3, 1] * 12 + [0, 0])  # group 2 absent
    route, order = GroupRoute.by_group(token_group, 4)
    assert torch.equal(route.counts, torch.tensor([14, 12, 0, 24])) and bool((route.token_group.diff() >= 0).all())
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            sorted_out, plain = layer(x[order], route=route), layer(x, route=GroupRoute(token_group))
            assert torch.allclose(sorted_out.hidden, plain.hidden[order], atol=1e-5)
            assert torch.equal(sorted_out.counts, plain.counts)
            allowed = torch.as_tensor(layer.pool.owner).unsqueeze(0) == token_group.unsqueeze(1)
            layer.dispatch_path = None  # the per-expert dispatch, by its own choice
            assert torch.allclose(plain.hidden, layer(x, allowed=allowed).hidden, atol=1e-5)
            layer.dispatch_path = path


@pytest.mark.parametrize("token_group", [[1, 3, 2] * 10, [1, 2] * 12])
def test_cpus_grouped_path_on_the_span_of_groups_present_equals_the_loop(token_group, monkeypatch):
    """Where the CPU chooses the grouped path itself, the grouped matmuls run over the span of groups present
    alone (groups before the first and after the last present one cut off as a view): the same outputs as the
    per-group loop and as the device's grouped path over every group; a batch without tokens gives none."""
    layer = grown_layer((2, 2, 2, 2, 2))
    token_group = torch.tensor(token_group, dtype=torch.long)
    route, order = GroupRoute.by_group(token_group, 5)
    x = torch.randn(len(token_group), 8)[order]
    groups_run, grouped_mm = [], torch.nn.functional.grouped_mm
    monkeypatch.setattr(torch.nn.functional, "grouped_mm", lambda a, b, **kw: groups_run.append(len(b)) or grouped_mm(a, b, **kw))
    with torch.no_grad():
        assert default_group_path(x, route.counts) == "grouped"
        outs = {}
        for path in (None, "grouped", "loop"):
            layer.dispatch_path = path
            outs[path] = layer(x, route=route).hidden
        assert torch.allclose(outs[None], outs["loop"], atol=1e-5) and torch.allclose(outs[None], outs["grouped"], atol=1e-5)
        layer.dispatch_path = None
        none = torch.zeros(0, dtype=torch.long)
        assert layer(x[:0], route=GroupRoute(none, counts=torch.zeros(5, dtype=torch.long))).hidden.shape == (0, 8)
    span = int(token_group.max() - token_group.min()) + 1
    assert groups_run == [span, span, 5, 5]  # two matmuls each: the span's groups alone; the device path's every group


def test_one_group_route_runs_only_that_groups_experts():
    """Training one experience: every token in one group, known on the host; the other groups' experts and
    router columns are not even read."""
    layer = grown_layer((2, 2, 2))
    x = torch.randn(30, 8)
    single, masked = layer(x, route=GroupRoute(single=1)), layer(x, allowed=torch.as_tensor(layer.pool.owner).eq(1).expand(30, -1))
    assert torch.allclose(single.hidden, masked.hidden, atol=1e-6) and torch.equal(single.counts, masked.counts)
    assert torch.allclose(single.balance_loss, masked.balance_loss) and torch.allclose(single.z_loss, masked.z_loss)
    single.hidden.sum().backward()
    touched = {n for n, p in layer.named_parameters() if p.grad is not None}
    assert touched and all(n.startswith("norm") or n in {"router.columns.2", "router.columns.3"} or n.startswith(("pool.experts.2.", "pool.experts.3."))
                           for n in touched)


@pytest.mark.parametrize("path", ["padded", "grouped", "loop"])
def test_kept_stacks_follow_in_place_changes_and_moves(path):
    """The stacked weights kept between inference batches are refreshed when an expert changes in place (only
    its group is copied again) or the layer moves: the output is always what the experts compute now."""
    layer = grown_layer((2, 2, 2))
    layer.dispatch_path = path
    x = torch.randn(40, 8)
    token_group = torch.arange(40) % 3
    route, allowed = GroupRoute(token_group), torch.as_tensor(layer.pool.owner).unsqueeze(0) == token_group.unsqueeze(1)
    with torch.no_grad():
        layer(x, route=route)  # stacks built
        layer.pool.experts[3].fc2.weight.mul_(3.0)  # group 1 trains on
        layer.router.columns[4].add_(0.5)
        assert torch.allclose(layer(x, route=route).hidden, layer(x, allowed=allowed).hidden, atol=1e-5)
        if path == "grouped":  # grouped matmuls have no float64: the move below is checked on the other paths
            return
        layer.dispatch_path = None  # in float64 the default on CPU is the loop, whatever the grouped path would be
        layer.double()
        assert layer(x.double(), route=route).hidden.dtype == torch.float64
        layer.dispatch_path = path
        assert layer(x.double(), route=route).hidden.dtype == torch.float64
        assert torch.allclose(layer(x.double(), route=route).hidden, layer(x.double(), allowed=allowed).hidden, atol=1e-9)


def test_grouped_path_under_inference_mode_follows_changes_between_calls():
    """Under `torch.inference_mode` (how Lightning evaluates) the kept stacks are inference tensors, which keep
    no version: the grouped path's augmented weights still follow an expert changed between two calls."""
    layer = grown_layer((2, 2, 2))
    layer.dispatch_path = "grouped"
    x, token_group = torch.randn(40, 8), torch.arange(40) % 3
    allowed = torch.as_tensor(layer.pool.owner).unsqueeze(0) == token_group.unsqueeze(1)
    with torch.inference_mode():
        layer(x, route=GroupRoute(token_group))
    with torch.no_grad():
        layer.pool.experts[2].fc1.bias.add_(1.0)
    with torch.inference_mode():
        got = layer(x, route=GroupRoute(token_group)).hidden
    with torch.no_grad():
        assert torch.allclose(got, layer(x, allowed=allowed).hidden, atol=1e-5)


def test_kept_stacks_grow_with_the_pool():
    layer = grown_layer((2, 2))
    x, token_group = torch.randn(30, 8), torch.arange(30) % 3
    with torch.no_grad():
        layer(x, route=GroupRoute(token_group % 2))  # stacks of two groups
        layer.grow(2, group=2)
        with torch.enable_grad():  # a training step on the new group only touches the fresh stack
            layer(x, route=GroupRoute(token_group)).hidden.sum().backward()
        layer.pool.experts[4].fc1.bias.add_(1.0)
        allowed = torch.as_tensor(layer.pool.owner).unsqueeze(0) == token_group.unsqueeze(1)
        assert torch.allclose(layer(x, route=GroupRoute(token_group)).hidden, layer(x, allowed=allowed).hidden, atol=1e-5)
