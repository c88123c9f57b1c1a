"""MNIST-1D signals produced offline by the `mnist1d` package's generator (40 samples, 10 classes)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scenarios.modality import ModalitySpec
from scenarios.sources.base import SOURCES, SourceData, Split, check_budget, check_counts


@dataclass
class Mnist1dParams:
    num_samples: int = 5000  # signals generated (train and test together)
    train_split: float = 0.8  # share of them trained on
    iid_noise_scale: float = 0.02  # independent noise per time step (the generator's setting)
    corr_noise_scale: float = 0.25  # correlated noise (the generator's setting)


def mnist1d_arrays(params: Mnist1dParams, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train [N,1,40], y_train, x_test, y_test) from the generator; never downloads."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = params.num_samples
    args.train_split = params.train_split
    args.iid_noise_scale = params.iid_noise_scale
    args.corr_noise_scale = params.corr_noise_scale
    args.seed = seed
    state = np.random.get_state()  # make_dataset reseeds numpy's global RNG; leave it as we found it
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(state)
    as_signal = lambda x: x.astype(np.float32)[:, None, :]  # noqa: E731  (N, 1, 40)
    return as_signal(data["x"]), data["y"].astype(np.int64), as_signal(data["x_test"]), data["y_test"].astype(np.int64)


@SOURCES.register("mnist1d", params=Mnist1dParams, generated=True)
def mnist1d_source(params: Mnist1dParams, seed: int) -> SourceData:
    """MNIST-1D: modality `signal` (1x40)."""
    check_counts(num_samples=params.num_samples)
    check_budget(params.num_samples * 40, "num_samples x 40")
    if not 0.0 < params.train_split < 1.0:
        raise ValueError(f"train_split: must lie in (0, 1), got {params.train_split}")
    x, y, xt, yt = mnist1d_arrays(params, seed)
    spec = {"signal": ModalitySpec("signal", tuple(x.shape[1:]))}
    return SourceData(Split({"signal": x}, y), Split({"signal": xt}, yt), spec)
