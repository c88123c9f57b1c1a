"""Metric formulas against hand-computed values and Avalanche's own implementations."""

import numpy as np
import pytest
from avalanche.evaluation.functional import forgetting as avl_forgetting
from avalanche.evaluation.metrics.forgetting_bwt import Forgetting as AvlForgetting
from avalanche.evaluation.metrics.forward_transfer import ForwardTransfer as AvlForwardTransfer

from lifelong_moe import metrics as M

# R[i][j]: accuracy on experience j after training experience i
R = np.array([
    [0.90, 0.10, 0.20],
    [0.60, 0.80, 0.30],
    [0.70, 0.50, 0.95],
])
b = [0.10, 0.05, 0.10]


def test_hand_computed_values():
    assert M.final_average_accuracy(R) == pytest.approx((0.70 + 0.50 + 0.95) / 3)
    # A_0 = .9, A_1 = (.6+.8)/2 = .7, A_2 = (.7+.5+.95)/3
    assert M.seen_accuracy(R) == pytest.approx([0.9, 0.7, 2.15 / 3])
    assert M.average_incremental_accuracy(R) == pytest.approx((0.9 + 0.7 + 2.15 / 3) / 3)
    # BWT = ((.7-.9) + (.5-.8)) / 2
    assert M.backward_transfer(R) == pytest.approx(-0.25)
    # FWT = ((R[0][1]-b1) + (R[1][2]-b2)) / 2 = ((.1-.05) + (.3-.1)) / 2
    assert M.forward_transfer(R, b) == pytest.approx(0.125)


def test_max_based_forgetting_differs_from_first_last():
    # exp 0: best .9 at step 0, .6 at step 1, .7 at step 2 -> max-based .2; first-last also .2
    # exp 1: best .8 at step 1, .5 at step 2 -> .3
    assert M.forgetting_per_experience(R) == pytest.approx([0.2, 0.3])
    assert M.average_forgetting(R) == pytest.approx(0.25)
    assert M.average_forgetting(R, k=1) == pytest.approx(0.3)  # after step 1: .9 - .6
    # a case where the best accuracy is not the one right after training: max-based is larger
    R2 = np.array([[0.5, 0.0], [0.9, 0.8]])
    R3 = np.array([[0.5, 0.0, 0.0], [0.9, 0.8, 0.0], [0.4, 0.7, 0.9]])
    assert M.forgetting_per_experience(R3) == pytest.approx([0.5, 0.1])
    assert M.first_last_forgetting(R3) == pytest.approx([0.1, 0.1])
    assert M.average_forgetting(R2) == pytest.approx(-0.4)  # improvement shows as negative forgetting


def test_intransigence_against_reference():
    assert M.intransigence(R, [0.95, 0.90, 0.97]) == pytest.approx([0.05, 0.10, 0.02])
    s = M.summarize(R, b, reference_diagonal=[0.95, 0.90, 0.97])
    assert s["intransigence"] == pytest.approx(np.mean([0.05, 0.10, 0.02]))


def test_weighted_seen_accuracy_uses_test_sizes():
    assert M.seen_accuracy(R, weights=[1, 3, 1])[1] == pytest.approx((0.6 + 3 * 0.8) / 4)


def test_matches_avalanche_functional_forgetting():
    rng = np.random.default_rng(0)
    for T in (2, 4, 6):
        Rr = rng.random((T, T))
        ours = M.first_last_forgetting(Rr)
        theirs = avl_forgetting(Rr)[-1, :-1]
        assert ours == pytest.approx(list(theirs))


def test_matches_avalanche_metric_classes():
    rng = np.random.default_rng(1)
    T = 5
    Rr = rng.random((T, T))
    bb = rng.random(T)
    forgetting = AvlForgetting()
    fwt = AvlForwardTransfer()
    for j in range(T):
        forgetting.update(j, Rr[j, j], initial=True)
        forgetting.update(j, Rr[-1, j])
        fwt.update(j, bb[j], initial=True)
        if j >= 1:
            fwt.update(j, Rr[j - 1, j])
    avl_f = forgetting.result()
    assert [avl_f[j] for j in range(T - 1)] == pytest.approx(M.first_last_forgetting(Rr))
    # Avalanche's BWT is minus its forgetting; GEM's BWT is the mean of that over j < T-1
    assert M.backward_transfer(Rr) == pytest.approx(-np.mean([avl_f[j] for j in range(T - 1)]))
    avl_fwt = fwt.result()
    assert M.forward_transfer(Rr, bb) == pytest.approx(np.mean([avl_fwt[j] for j in range(1, T)]))


def test_prefix_metrics_truncate_the_stream():
    p = M.prefix_metrics(R, 1, b)
    assert p["acc"] == pytest.approx(0.7)
    assert p["bwt"] == pytest.approx(-0.3)
    assert p["fwt"] == pytest.approx(0.05)


def test_rejects_non_square():
    with pytest.raises(ValueError):
        M.final_average_accuracy(np.zeros((2, 3)))
