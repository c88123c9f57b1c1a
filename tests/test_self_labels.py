"""`self_labels`: each experience also learns (class, transform) pairs of its batch under random transforms.
The transforms act sample by sample on images and signals and leave vectors, tokens and the presence mask
alone; a bad setting is refused naming the key; the extra heads are trained, freeze with their group, and
travel with a checkpoint."""

from __future__ import annotations

import pytest
import torch
from test_resume import straight_and_resumed

from conftest import build_model_and_stream, tiny_config, train_experience
from lifelong_moe import config_from_dict, run
from lifelong_moe.checkpointing import load_checkpoint
from lifelong_moe.errors import ConfigError
from lifelong_moe.models.self_labels import SELF_LABELS, SelfLabelHeads, plain_and_transformed, transform_batch
from scenarios.modality import MASK_KEY

DIGITS = {"scenario": "class_incremental", "sources": {"d": {"kind": "digits"}}, "split": {"source": "d", "n_experiences": 2}}


def test_rotations_turn_each_image_by_its_own_quarter_turns_and_leave_the_rest():
    torch.manual_seed(0)
    image = torch.randn(64, 1, 5, 5)
    vector, mask = torch.randn(64, 3), {"image": torch.ones(64, dtype=torch.bool)}
    out, t = transform_batch("rotations", {"image": image, "vec": vector, MASK_KEY: mask})
    assert set(t.tolist()) == {1, 2, 3}  # never the identity, every other turn drawn
    for i in range(64):
        assert torch.equal(out["image"][i], torch.rot90(image[i], int(t[i]), (-2, -1)))
    assert out["vec"] is vector and out[MASK_KEY] is mask


def test_dihedral_gives_the_seven_other_symmetries_of_a_square_image():
    torch.manual_seed(2)
    image = torch.arange(9.0).view(1, 1, 3, 3).expand(200, 1, 3, 3)
    out, t = transform_batch("dihedral", {"image": image})
    assert set(t.tolist()) == set(range(1, 8))
    for i in range(200):
        k, flipped = int(t[i]) % 4, int(t[i]) >= 4
        want = torch.rot90(image[i], k, (-2, -1))
        assert torch.equal(out["image"][i], want.flip(-1) if flipped else want)
    assert len({tuple(out["image"][i].flatten().tolist()) for i in range(200)}) == 7  # all distinct, none the identity
    assert not any(torch.equal(out["image"][i], image[i]) for i in range(200))


def test_flips_reverse_time_of_signals_and_the_pair_is_the_batch_then_its_copy():
    torch.manual_seed(1)
    signal, tokens = torch.randn(8, 2, 7), torch.randint(0, 9, (8, 4))
    joined, t = plain_and_transformed("flips", {"sig": signal, "tok": tokens, MASK_KEY: {"sig": torch.ones(8, dtype=torch.bool)}})
    assert torch.equal(t, torch.ones(8, dtype=torch.long))  # one transform besides the identity
    assert torch.equal(joined["sig"][:8], signal) and torch.equal(joined["sig"][8:], signal.flip(-1))
    assert torch.equal(joined["tok"], torch.cat([tokens, tokens])) and joined[MASK_KEY]["sig"].shape == (16,)


def test_the_joint_labels_are_class_then_transform():
    heads = SelfLabelHeads()
    heads.add(0, 4, n_classes=2, kind="rotations")
    assert heads["0"].out_features == 2 * SELF_LABELS["rotations"][0]
    with torch.no_grad():  # a head that answers the joint label 3 for every sample
        heads["0"].weight.zero_()
        heads["0"].bias.copy_(torch.tensor([0.0, 0, 0, 50, 0, 0, 0, 0]))
    pooled = torch.zeros(2, 4)
    right = heads.loss(0, pooled, torch.tensor([0]), torch.tensor([3]), "rotations")  # (0, 0) then (0, 3)
    wrong = heads.loss(0, pooled, torch.tensor([1]), torch.tensor([3]), "rotations")  # (1, 0) then (1, 3)
    assert right < wrong and float(right.detach()) == pytest.approx(25.0, abs=0.01)  # the plain copy (label 0) costs 50, the turned one 0


@pytest.mark.parametrize("params, stream, message", [
    ({"self_labels": "mirror"}, DIGITS, "model.params.self_labels: use none, rotations, flips, dihedral, got 'mirror'"),
    ({"self_labels": "rotations"}, None, "needs an image or signal modality"),  # the tiny stream: vectors only
])
def test_a_bad_setting_is_refused_naming_the_key(tmp_path, params, stream, message):
    cfg = tiny_config(tmp_path, model={"name": "moe", "params": {"embed_dim": 16, "expert_hidden": 32, **params}})
    if stream is not None:
        cfg["stream"] = stream
    with pytest.raises(ConfigError, match=r"model\.params\.self_labels") as err:
        run(config_from_dict(cfg), progress=lambda s: None)
    assert message in str(err.value)
    assert not list(tmp_path.rglob("checkpoint.pt"))


def test_rotations_refuse_an_image_that_is_not_square():
    from lifelong_moe.models.moe_model import MoEModel
    from lifelong_moe.models.moe_params import MoEParams
    from scenarios.modality import ModalitySpec

    cfg = config_from_dict(tiny_config("/tmp/unused"))
    model = MoEModel(MoEParams(embed_dim=8, expert_hidden=8, self_labels="rotations"), n_classes=2, scenario="class_incremental",
                     train=cfg.train)
    with pytest.raises(ConfigError, match="'rotations' needs square images; 'wide' is 4x6"):
        model.add_modality("wide", ModalitySpec("image", (1, 4, 6)))


def test_the_self_label_heads_resume_bit_identically(tmp_path):
    """A run stopped after one experience and resumed ends as an uninterrupted one, each experience's
    head over 2 x 4 (class, turn) pairs in the checkpoint."""
    def digits(cfg: dict) -> None:
        cfg["stream"] = DIGITS
        cfg["model"]["params"]["self_labels"] = "rotations"

    straight, resumed, run_dir = straight_and_resumed(tmp_path, digits, 1)
    assert resumed.accuracy_matrix.tolist() == straight.accuracy_matrix.tolist()
    a, b = load_checkpoint(run_dir)["model"], load_checkpoint(straight.run_dir)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert a["self_label_heads.0.weight"].shape == (5 * 4, 16) and a["self_label_heads.1.weight"].shape == (5 * 4, 16)


def test_the_self_label_head_learns_turns_and_freezes_with_its_group(tmp_path):
    """After the first experience its head tells (class, turn) of turned training images far above chance
    (1/8 with 2 classes); the second experience changes neither it nor the group it reads."""
    stream = {**DIGITS, "split": {"source": "d", "n_experiences": 5}}
    cfg, s, model = build_model_and_stream(tiny_config(tmp_path, stream=stream, model={"name": "moe", "params": {
        "embed_dim": 16, "expert_hidden": 32, "self_labels": "rotations"}}, train={"epochs": 8, "batch_size": 32, "lr": 0.01}))
    train_experience(cfg, model, s.train_stream[0])
    before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("self_label_heads.0") or ".experts.0." in k}
    model.eval()
    xs, ys = zip(*[(x, y) for x, _, y in model.batches(s.train_stream[0].dataset)], strict=True)
    x = {m: torch.cat([b[m] for b in xs]) for m in xs[0] if m != MASK_KEY}
    y = torch.cat(ys)
    torch.manual_seed(0)
    with torch.no_grad():
        joined, t = plain_and_transformed("rotations", x)
        tokens, present = model.modality_tokens(joined)
        pooled = model.group_features(joined, tokens, present)[0][:, -model.settings.embed_dim:]  # the last depth: what the heads read
        answers = model.self_label_heads["0"](pooled).argmax(1)
    local = (model.heads["0"].classes.unsqueeze(0) == y.unsqueeze(1)).int().argmax(1)
    assert (answers == torch.cat([local * 4, local * 4 + t])).float().mean() > 0.6

    model.train()
    train_experience(cfg, model, s.train_stream[1], seed=1)
    after = model.state_dict()
    assert len(before) > 2 and all(torch.equal(after[k], v) for k, v in before.items())
