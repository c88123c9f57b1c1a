"""Does per-sample cost stay flat as the MoE grows? A 20-experience class-incremental stream (synthetic,
40 classes, 2 modalities) with 2 new experts per layer at every experience; after each experience starts,
time training steps (forward, backward, optimizer) and inference batches with the same model, and record
peak memory. Prints step time per sample at experience 20 over experience 1, in one process.

    python experiments/bench_growth.py [--device cpu|cuda] [--experiences 20] [--steps 30]
"""

from __future__ import annotations

import argparse
import resource

import lightning as L
import torch

from lifelong_moe import config_from_dict
from lifelong_moe.runner import build_model
from lifelong_moe.training import train_loader
from scenarios import build_stream
from timing import median_time


def move(batch, device):
    if isinstance(batch, dict):
        return {k: move(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move(v, device) for v in batch)
    return batch.to(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--experiences", type=int, default=20)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    T = args.experiences
    cfg = config_from_dict({
        "stream": {
            "sources": {"s": {"kind": "synthetic", "params": {"n_classes": 2 * T, "n_modalities": 2, "dim": 32,
                                                              "n_train_per_class": 300, "n_test_per_class": 50}}},
            "split": {"source": "s", "n_experiences": T},
        },
        "model": {"name": "moe", "params": {"embed_dim": 128, "expert_hidden": 256, "n_layers": 2, "experts_per_growth": 2, "k": 2}},
        "train": {"batch_size": args.batch},
    })
    L.seed_everything(0, verbose=False)
    stream = build_stream(cfg.stream, cfg.seed)
    model = build_model(cfg, stream).to(args.device)
    rows = []
    for i, exp in enumerate(stream.train_stream):
        model.on_experience_start(exp)
        model.to(args.device)
        opt = torch.optim.Adam(model.optimizer_param_groups(), lr=1e-3)
        batches = [move(b, args.device) for b, _ in zip(train_loader(exp.dataset, cfg.train, i), range(4))]
        it = iter(range(10**9))

        def train_step():
            x, y, t = batches[next(it) % len(batches)]
            loss, _ = model.training_loss(x, y, t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        model.train()
        t_train = median_time(train_step, args.device, args.steps, warmup=1)
        for _ in range(20):  # train a little so the keys and heads are meaningful
            train_step()
        model.on_experience_end(exp)
        model.to(args.device)
        model.eval()
        x, y, _t = batches[0]
        with torch.no_grad():
            t_infer = median_time(lambda: model(x, None), args.device, args.steps, warmup=1)
        counts = model.parameter_counts()
        peak = torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rows.append((i + 1, counts["routed_experts_per_layer"], counts["total"], counts["active_per_sample"],
                     t_train / len(y) * 1e6, t_infer / len(y) * 1e6, peak))
    print(f"device={args.device} batch={args.batch} threads={torch.get_num_threads()}")
    print("| experience | experts/layer | params | active/sample | train us/sample | infer us/sample | peak MiB |\n|---|---|---|---|---|---|---|")
    for r in rows:
        if r[0] in (1, 2, 5, 10, 15, T):
            print(f"| {r[0]} | {r[1]} | {r[2]:,} | {r[3]:,} | {r[4]:.1f} | {r[5]:.1f} | {r[6]:.0f} |")
    first, last = rows[0], rows[-1]
    print(f"train step per sample, experience {T} / experience 1: {last[4] / first[4]:.3f}")
    print(f"inference per sample,  experience {T} / experience 1: {last[5] / first[5]:.3f}")
    what = "GPU allocated" if args.device == "cuda" else "process RSS"
    print(f"peak memory ({what}): {first[6]:.0f} MiB after experience 1, {last[6]:.0f} MiB after experience {T}")


if __name__ == "__main__":
    main()
