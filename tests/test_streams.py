"""Stream construction: classes, modalities, task labels and masks per experience, for every scenario kind."""

from __future__ import annotations

import numpy as np
import torch
from omegaconf import OmegaConf

from scenarios import MASK_KEY, StreamConfig, build_stream
from scenarios.sources import load_source
from scenarios.sources.mnist1d import Mnist1dParams, mnist1d_arrays
from scenarios.sources.multimodal_digits import MultimodalDigitsParams

SYN = {"kind": "synthetic", "params": {"n_classes": 6, "n_modalities": 3, "dim": 4, "n_train_per_class": 10, "n_test_per_class": 5}}


def stream(**cfg):
    return build_stream(OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(StreamConfig), cfg)), seed=0)


def labels_of(ds):
    return sorted(set(int(y) for y in ds.targets))


def test_class_incremental_split():
    s = stream(sources={"syn": SYN}, split={"source": "syn", "n_experiences": 3})
    assert [sorted(e.avalanche.classes_in_this_experience) for e in s.train_stream] == [[0, 1], [2, 3], [4, 5]]
    assert [e.classes for e in s.train_stream] == [[0, 1], [2, 3], [4, 5]]
    assert [labels_of(e.dataset) for e in s.test_stream] == [[0, 1], [2, 3], [4, 5]]
    assert sorted(s.train_stream[2].avalanche.previous_classes) == [0, 1, 2, 3]
    assert all(e.task_label == 0 for e in s.train_stream)
    assert [len(e.dataset) for e in s.train_stream] == [20, 20, 20]
    assert s.n_classes == 6
    x, y, t = s.train_stream[1].dataset[0]
    assert set(x) == {"m0", "m1", "m2", MASK_KEY} and x["m0"].shape == (4,) and y in (2, 3) and t == 0


def test_task_incremental_labels_default_to_index_and_can_be_set():
    s = stream(
        scenario="task_incremental",
        sources={"syn": SYN},
        experiences=[{"source": "syn", "classes": [0, 1]}, {"source": "syn", "classes": [2, 3], "task_label": 7}],
    )
    assert [e.task_label for e in s.train_stream] == [0, 7]
    assert {int(t) for _, _, t in s.test_stream[1].dataset} == {7}


def test_domain_incremental_same_classes_new_domain():
    shifted = {"kind": "synthetic", "params": {**SYN["params"], "domain": 1}}
    s = stream(
        scenario="domain_incremental",
        sources={"a": SYN, "b": shifted},
        experiences=[{"source": "a", "classes": [0, 1, 2]}, {"source": "b", "classes": [0, 1, 2]}],
    )
    x0 = s.train_stream[0].dataset[0][0]["m0"]
    x1 = s.train_stream[1].dataset[0][0]["m0"]
    assert [labels_of(e.dataset) for e in s.train_stream] == [[0, 1, 2], [0, 1, 2]]
    assert not torch.allclose(x0, x1)


def test_modality_incremental_masks_absent_modalities():
    s = stream(
        scenario="modality_incremental",
        sources={"syn": SYN},
        experiences=[
            {"source": "syn", "modalities": ["m0"]},
            {"source": "syn", "modalities": ["m1"]},
            {"source": "syn", "modalities": ["m0", "m1"]},
        ],
    )
    assert [e.modalities for e in s.train_stream] == [["m0"], ["m1"], ["m0", "m1"]]
    x, _, _ = s.train_stream[0].dataset[3]
    assert set(x) == {"m0", "m1", MASK_KEY}  # the union of the stream's modalities, m2 never appears
    assert bool(x[MASK_KEY]["m0"]) and not bool(x[MASK_KEY]["m1"])
    assert torch.count_nonzero(x["m1"]) == 0  # absent data is zeros, flagged by the mask
    # experiences with different modalities concatenate and collate together (replay, joint training)
    joint = s.train_stream[0].dataset.concat(s.train_stream[1].dataset)
    batch = next(iter(torch.utils.data.DataLoader(joint, batch_size=len(joint))))
    assert batch[0][MASK_KEY]["m0"].sum() == len(s.train_stream[0].dataset)


def test_test_missing_rate_is_close_to_requested_and_keeps_one_modality():
    s = stream(
        sources={"syn": {"kind": "synthetic", "params": {**SYN["params"], "n_test_per_class": 200}}},
        experiences=[{"source": "syn", "modalities": ["m0", "m1"], "test_missing_rate": {"m0": 0.5, "m1": 0.5}}],
    )
    ds = s.test_stream[0].dataset
    present = np.array([[bool(x[MASK_KEY]["m0"]), bool(x[MASK_KEY]["m1"])] for x, _, _ in ds])
    assert present.any(axis=1).all()
    # P(m0 absent) = .5 * (1 - P(both dropped and m0 kept)) = .5 - .25/2 = .375
    assert abs((~present[:, 0]).mean() - 0.375) < 0.05
    assert all(bool(x[MASK_KEY]["m0"]) for x, _, _ in s.train_stream[0].dataset)  # training data untouched


def test_sizes_subsample_stratified():
    s = stream(sources={"syn": SYN}, experiences=[{"source": "syn", "classes": [0, 1, 2], "train_size": 6, "test_size": 3}])
    ys = [int(y) for _, y, _ in s.train_stream[0].dataset]
    assert sorted(ys) == [0, 0, 1, 1, 2, 2]
    assert len(s.test_stream[0].dataset) == 3


def test_multimodal_digits_pairs_by_label_with_three_modalities():
    data = load_source("multimodal_digits", MultimodalDigitsParams(n_train_per_class=20, n_test_per_class=10), 0)
    assert data.train.inputs["image"].shape == (200, 1, 8, 8)
    assert data.train.inputs["signal"].shape == (200, 1, 40)
    assert data.train.inputs["text"].shape == (200, 12) and data.train.inputs["text"].dtype == np.int64
    assert data.classes == list(range(10))
    assert np.bincount(data.test.labels).tolist() == [10] * 10


def test_mnist1d_generator_leaves_global_numpy_rng_alone():
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    x, _y, xt, _yt = mnist1d_arrays(Mnist1dParams(num_samples=200), 0)
    assert np.random.random() == expected
    assert x.shape == (160, 1, 40) and xt.shape == (40, 1, 40)


def test_npz_source_reads_user_files(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("test", 12)):
        np.savez(tmp_path / f"{split}.npz", img=rng.random((n, 1, 4, 4)).astype(np.float32),
                 words=rng.integers(0, 9, (n, 5)), labels=np.arange(n) % 3)
    s = stream(
        sources={"mine": {"kind": "npz", "params": {"train": str(tmp_path / "train.npz"), "test": str(tmp_path / "test.npz")}}},
        split={"source": "mine", "n_experiences": 3},
    )
    assert s.modalities["img"].kind == "image" and s.modalities["words"].kind == "text"
    assert s.modalities["words"].vocab_size == 9
    assert [labels_of(e.dataset) for e in s.train_stream] == [[0], [1], [2]]
    assert s.train_stream[0].dataset[0][0]["words"].dtype == torch.int64


def test_same_seed_same_stream():
    a = stream(sources={"syn": SYN}, split={"source": "syn", "n_experiences": 2, "train_size": 8})
    b = stream(sources={"syn": SYN}, split={"source": "syn", "n_experiences": 2, "train_size": 8})
    xa = torch.stack([x["m1"] for x, _, _ in a.train_stream[1].dataset])
    xb = torch.stack([x["m1"] for x, _, _ in b.train_stream[1].dataset])
    assert torch.equal(xa, xb)


def test_a_train_size_must_hold_every_class_and_a_test_size_need_not():
    import pytest

    from scenarios.errors import ConfigError

    base = {"scenario": "class_incremental", "split": {"source": "syn", "n_experiences": 2},
            "sources": {"syn": {"kind": "synthetic", "params": {"n_classes": 4, "n_modalities": 1, "dim": 4}}}}
    built = stream(**{**base, "split": {**base["split"], "test_size": 1}})  # a class unmeasured, none untrained
    assert [e.n_test for e in built.experiences] == [1, 1]
    with pytest.raises(ConfigError, match=r"stream\.split\.train_size: 1 sample\(s\) cannot hold each of the experience's 2 classes"):
        stream(**{**base, "split": {**base["split"], "train_size": 1}})
