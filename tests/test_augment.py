"""Shift augmentation: images and signals move by whole steps, zero-filled, within the bound; tokens,
feature vectors and presence masks are left alone; a fraction of 0 changes nothing and draws nothing."""

from __future__ import annotations

import torch

from scenarios.augment import shift_augment
from scenarios.modality import MASK_KEY


def test_each_sample_moves_by_whole_steps_within_the_bound():
    torch.manual_seed(0)
    image = torch.zeros(64, 1, 10, 10)
    image[:, 0, 4, 4] = 1.0  # one lit pixel, which must land within 2 steps on each axis
    signal = torch.zeros(64, 3, 20)
    signal[:, :, 10] = torch.arange(1.0, 4.0)
    tokens = torch.randint(1, 50, (64, 7))
    mask = {"image": torch.ones(64, dtype=torch.bool)}
    out = shift_augment({"image": image, "signal": signal, "text": tokens, MASK_KEY: mask}, 0.2)
    assert out["text"] is tokens and out[MASK_KEY] is mask
    lit = out["image"][:, 0].flatten(1).argmax(1)
    rows, cols = lit // 10, lit % 10
    assert torch.equal(out["image"].sum((1, 2, 3)), torch.ones(64))  # moved, not blurred or lost (2 <= 20% of 10)
    assert (rows - 4).abs().max() <= 2 and (cols - 4).abs().max() <= 2 and len(set(lit.tolist())) > 10
    where = out["signal"].argmax(2)  # (B, 3): every channel of a sample moves together, by at most 4
    assert (where == where[:, :1]).all() and (where[:, 0] - 10).abs().max() <= 4
    assert torch.equal(out["signal"].amax(2), signal.amax(2))


def test_zero_fraction_returns_the_batch_and_draws_nothing():
    batch = {"image": torch.rand(4, 1, 8, 8)}
    state = torch.get_rng_state()
    assert shift_augment(batch, 0.0) is batch
    assert torch.equal(torch.get_rng_state(), state)


def test_shifted_out_content_is_zero_filled():
    torch.manual_seed(1)
    x = torch.ones(32, 1, 40)
    out = shift_augment({"s": x}, 0.25)["s"]
    zeros = (out == 0).sum(2).flatten()
    assert zeros.max() <= 10 and zeros.max() > 0 and ((out == 0) | (out == 1)).all()
