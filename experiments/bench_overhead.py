"""Overhead of the lifelong runner against a plain torch loop: one experience of the default experiment
(train with the runner's fresh Lightning Trainer and TensorBoard logger, then evaluate every test
experience), the same model, data, optimizer and epochs, timed side by side in one process.

    python experiments/bench_overhead.py [--config configs/default.yaml] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lifelong_moe import build_model, load_config
from lifelong_moe.evaluation import measure
from lifelong_moe.features import build_experiment_stream
from lifelong_moe.training import eval_loader, fit_experience, train_loader


def runner_path(cfg, stream, logdir: str) -> float:
    L.seed_everything(cfg.seed, verbose=False)
    model = build_model(cfg, stream)
    loaders = [eval_loader(e.dataset, cfg.train) for e in stream.test_stream]
    logger = TensorBoardLogger(logdir, name="bench", default_hp_metric=False)
    exp = stream.train_stream[0]
    t0 = time.perf_counter()
    model.on_experience_start(exp)
    fit_experience(model, exp.dataset, cfg.train, cfg.trainer, seed=0, logger=logger)
    measure(model, loaders, cfg.trainer)
    return time.perf_counter() - t0


def plain_path(cfg, stream) -> float:
    L.seed_everything(cfg.seed, verbose=False)
    model = build_model(cfg, stream)
    loaders = [eval_loader(e.dataset, cfg.train) for e in stream.test_stream]
    exp = stream.train_stream[0]
    t0 = time.perf_counter()
    model.on_experience_start(exp)
    opt = torch.optim.Adam(model.optimizer_param_groups(), lr=cfg.train.lr)
    model.train()
    for _ in range(cfg.train.epochs):
        for x, y, t in train_loader(exp.dataset, cfg.train, seed=0):
            loss, _ = model.training_loss(x, y, t)  # the same computation as the runner's training_step
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        for loader in loaders:
            correct = sum(int((model(x, t).argmax(1) == y).sum()) for x, y, t in loader)
            _ = correct / len(loader.dataset)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cfg = load_config(args.config, ["trainer.enable_progress_bar=false", "trainer.accelerator=cpu", "trainer.devices=1", *args.overrides])
    stream = build_experiment_stream(cfg)
    runner_times, plain_times = [], []
    with tempfile.TemporaryDirectory() as logdir:
        runner_path(cfg, stream, logdir)  # warm-up: first-call costs of both paths
        plain_path(cfg, stream)
        for _ in range(args.repeats):  # interleaved, so drift on the machine hits both alike
            runner_times.append(runner_path(cfg, stream, logdir))
            plain_times.append(plain_path(cfg, stream))
    r, p = statistics.median(runner_times), statistics.median(plain_times)
    exp = stream.experiences[0]
    print(f"one experience: {exp.n_train} train samples, {cfg.train.epochs} epochs, batch {cfg.train.batch_size}; "
          f"evaluation on {len(stream.experiences)} test experiences; median of {args.repeats}")
    print(f"runner (Lightning): {r:.3f} s   plain torch loop: {p:.3f} s   ratio runner/plain: {r / p:.3f}")


if __name__ == "__main__":
    main()
