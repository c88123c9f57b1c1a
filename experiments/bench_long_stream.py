"""Cost per sample and memory along a long stream (100 experiences by default), for the lifelong MoE and a
replay baseline: does the MoE's cost per sample stay flat while its experts, heads and statistics grow?

    python experiments/bench_long_stream.py [--config configs/synthetic_100x2.yaml] [--methods moe replay]
        [--experiences 100] [--device cpu|cuda] [--dtype float32|bf16] [--batch 256] [--out experiments/results/growth]

Per method, experience by experience, in this one process (one thread on CPU):
- train: wall time of everything an experience costs to learn (the strategy's fit, and the model's work when
  it ends: for the MoE its class statistics and the validated weight), over the experience's training samples;
  and `train step`: the median training step (forward, backward, optimizer) alone, per sample, on a copy;
- inference: median over --repeats passes of the wall time per sample of a forward over --pool test samples
  drawn from the experiences seen so far, in batches of --batch, sorted by experience (`ordered`, as the
  evaluator reads them: a batch spans pool/batch-th of the seen experiences) or shuffled (`mixed`: every
  seen experience in every batch, the worst case for dispatch by group); and, steadier on a shared machine,
  `beside experience 1`: the same batches through the model as it was after experience 1 and the model now,
  batch by batch in turn, the ratio of the sums of each batch's least time (`timing.py`);
- memory: parameters, what is kept about past data (the MoE's statistics; the replay buffer's samples), and
  the process's resident memory (CPU) or the allocated GPU memory.
Before the stream, one experience is fitted and evaluated on a throwaway copy, so experience 1's figures hold
no start-up cost. Writes growth.json, growth.md and growth.png under --out. The ratios to report are
experience T over experience 1 (and, steadier, the median of the last five over the first five).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import lightning as L
import torch
import yaml
from torch.utils.data import ConcatDataset, DataLoader, Subset

from lifelong_moe import config_from_dict
from lifelong_moe.features import build_experiment_stream
from lifelong_moe.runner import build_model, build_strategy, sample_bytes
from lifelong_moe.strategies.base import FitContext
from lifelong_moe.training import train_loader
from timing import inference_pass_seconds, interleaved_per_sample_seconds, median_time, to_device

METHODS = {  # what each method replaces in the config (None: the config's own)
    "moe": None,
    "replay": {"model": {"name": "multimodal_mlp"}, "strategy": {"name": "replay"}},  # 200 samples, class-balanced
}


def resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def memory_mib(device: str) -> float:
    return torch.cuda.memory_allocated() / 2**20 if device == "cuda" else resident_mib()


def per_sample_us(model, batches: list, device: str, dtype: torch.dtype, repeats: int) -> float:
    """Median over --repeats passes (after one warm-up pass, which also builds a grown structure's tables)."""
    inference_pass_seconds(model, batches, device, dtype)
    return statistics.median(inference_pass_seconds(model, batches, device, dtype) for _ in range(repeats)) * 1e6


def step_us(model, batches: list, device: str, repeats: int) -> float:
    """Median wall time of one training step (forward, backward, optimizer) per sample, on a copy of the model:
    the model's own cost per step, without what a fit adds around the steps (a Lightning Trainer per
    experience walks every module a few times)."""
    model = copy.deepcopy(model)
    model.train()
    opt = torch.optim.Adam(model.optimizer_param_groups(), lr=1e-3)
    it = iter(range(10**9))

    def step() -> None:
        x, y, t = batches[next(it) % len(batches)]
        loss, _ = model.training_loss(x, y, t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return median_time(step, device, repeats * 5, warmup=2) / len(batches[0][1]) * 1e6


def accuracy(model, batches: list, device: str) -> float:
    with torch.no_grad():
        return sum(float((model(x, t).argmax(1) == y).sum()) for x, y, t in batches) / sum(len(y) for _, y, _ in batches)


def run_method(name: str, args: argparse.Namespace) -> list[dict]:
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    overrides = ["trainer.enable_progress_bar=false", f"trainer.accelerator={args.device}", "trainer.devices=1", *args.overrides]
    if dtype == torch.bfloat16:
        overrides.append("trainer.precision=bf16-mixed")
    raw = yaml.safe_load(Path(args.config).read_text())
    cfg = config_from_dict({**raw, **(METHODS[name] or {})}, overrides, search=(Path(args.config).parent,))
    L.seed_everything(cfg.seed, verbose=False)
    stream = build_experiment_stream(cfg)
    model, strategy = build_model(cfg, stream).to(args.device), build_strategy(cfg)
    tests = [e.dataset for e in stream.test_stream]
    collate = getattr(tests[0], "collate_fn", None)

    def batches_of(i: int, shuffled: bool) -> list:
        """--pool test samples of experiences 1..i+1, drawn with replacement (the same count at every
        experience), shuffled or sorted by experience."""
        seen = ConcatDataset(tests[: i + 1])
        draw = torch.randint(len(seen), (args.pool,), generator=torch.Generator().manual_seed(i))
        pool = Subset(seen, (draw if shuffled else draw.sort().values).tolist())
        return [to_device(b, args.device) for b in DataLoader(pool, batch_size=args.batch, collate_fn=collate)]

    def learn(m, s, i: int) -> None:
        exp = stream.train_stream[i]
        m.on_experience_start(exp)
        m.to(args.device)
        s.fit(m, stream.train_stream, i, FitContext(cfg.train, cfg.trainer, cfg.seed * 1000 + i, False))
        m.on_experience_end(exp)

    warm_model, warm_strategy = copy.deepcopy(model), build_strategy(cfg)  # start-up costs land here
    learn(warm_model, warm_strategy, 0)
    per_sample_us(warm_model, batches_of(0, True), args.device, dtype, 1)
    del warm_model, warm_strategy

    rows, first = [], None
    for i in range(min(args.experiences, len(stream.train_stream))):
        n_train = len(stream.train_stream[i].dataset)
        t0 = time.perf_counter()
        learn(model, strategy, i)
        if args.device == "cuda":
            torch.cuda.synchronize()
        train_s = time.perf_counter() - t0
        first = copy.deepcopy(model) if first is None else first  # timed beside every later model
        ordered, mixed = batches_of(i, False), batches_of(i, True)
        beside = {order: interleaved_per_sample_seconds([first, model], b, args.device, dtype, args.repeats)
                  for order, b in (("ordered", ordered), ("mixed", mixed))}
        exp = stream.train_stream[i]
        train_batches = [to_device(b, args.device) for b, _ in zip(train_loader(exp.dataset, cfg.train, i), range(4))]
        counts = model.parameter_counts()
        stored = strategy.stored_samples(stream.train_stream, i) * sample_bytes(stream) + model.stored_bytes()
        rows.append({
            "experience": i + 1, "train_us_per_sample": train_s / n_train * 1e6,
            "step_us_per_sample": step_us(model, train_batches, args.device, args.repeats),
            "infer_us_per_sample_ordered": per_sample_us(model, ordered, args.device, dtype, args.repeats),
            "infer_us_per_sample_mixed": per_sample_us(model, mixed, args.device, dtype, args.repeats),
            **{f"infer_beside_1_{order}": b / a for order, (a, b) in beside.items()},
            "accuracy_seen": accuracy(model, mixed, args.device),
            "parameters": counts["total"], "active_per_sample": counts.get("active_per_sample", counts["total"]),
            "stored_bytes": stored, "memory_mib": memory_mib(args.device),
        })
        r = rows[-1]
        print(f"{name} {i + 1:3d}: train {r['train_us_per_sample']:8.1f} us/sample | infer {r['infer_us_per_sample_ordered']:6.1f} "
              f"(mixed {r['infer_us_per_sample_mixed']:6.1f}) us/sample | stored {stored / 1e6:6.2f} MB | {r['memory_mib']:7.0f} MiB",
              flush=True)
    return rows


def ratios(rows: list[dict], key: str) -> tuple[float, float]:
    """(last / first, median of the last five / median of the first five)."""
    values = [r[key] for r in rows]
    return values[-1] / values[0], statistics.median(values[-5:]) / statistics.median(values[:5])


def write(results: dict[str, list[dict]], args: argparse.Namespace, header: str) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "growth.json").write_text(json.dumps({"settings": vars(args), "header": header, "rows": results}, indent=1))
    keys = [("train_us_per_sample", "train"), ("step_us_per_sample", "train step"), ("infer_us_per_sample_ordered", "inference (ordered)"),
            ("infer_us_per_sample_mixed", "inference (mixed)"), ("infer_beside_1_ordered", "inference beside experience 1 (ordered)"),
            ("infer_beside_1_mixed", "inference beside experience 1 (mixed)")]
    lines = [f"# Cost per sample along the stream ({args.config})", "", header, "",
             "| method | experience | train us/sample | train step us/sample | inference us/sample, ordered | mixed "
             "| accuracy on seen (mixed pool) | parameters | active/sample | stored MB | memory MiB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, rows in results.items():
        T = len(rows)
        for r in rows:
            if r["experience"] in sorted({1, 2, 5, 10, 20, 50, T // 2, T}):
                lines.append(f"| {name} | {r['experience']} | {r['train_us_per_sample']:.1f} | {r['step_us_per_sample']:.1f} | "
                             f"{r['infer_us_per_sample_ordered']:.1f} | "
                             f"{r['infer_us_per_sample_mixed']:.1f} | {r['accuracy_seen']:.3f} | {r['parameters']:,} | "
                             f"{r['active_per_sample']:,} | {r['stored_bytes'] / 1e6:.2f} | {r['memory_mib']:.0f} |")
    lines += ["", f"| method | ratio | {' | '.join(label for _, label in keys)} |", "|---|---|" + "---|" * len(keys)]
    for name, rows in results.items():
        T = len(rows)
        last, tail = zip(*(ratios(rows, k) for k, _ in keys), strict=True)
        lines.append(f"| {name} | experience {T} / 1 | {' | '.join(f'{v:.2f}' for v in last)} |")
        lines.append(f"| {name} | median of last 5 / first 5 | {' | '.join(f'{v:.2f}' for v in tail)} |")
    (out / "growth.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    for name, rows in results.items():
        x = [r["experience"] for r in rows]
        axes[0].plot(x, [r["train_us_per_sample"] for r in rows], label=f"{name}, experience")
        axes[0].plot(x, [r["step_us_per_sample"] for r in rows], ":", label=f"{name}, step")
        axes[1].plot(x, [r["infer_us_per_sample_ordered"] for r in rows], label=f"{name}, ordered")
        axes[1].plot(x, [r["infer_us_per_sample_mixed"] for r in rows], "--", label=f"{name}, mixed")
        axes[2].plot(x, [r["stored_bytes"] / 1e6 for r in rows], label=f"{name}, stored")
        axes[2].plot(x, [r["parameters"] * 4 / 1e6 for r in rows], ":", label=f"{name}, parameters (fp32)")
        axes[3].plot(x, [r["memory_mib"] for r in rows], label=name)
    for ax, title in zip(axes, ["train time per sample (us)", "inference time per sample (us)", "MB",
                                "resident memory (MiB)" if args.device == "cpu" else "GPU memory allocated (MiB)"], strict=True):
        ax.set_title(title)
        ax.set_xlabel("experiences")
        ax.legend(fontsize=7)
        ax.set_ylim(bottom=0)
    fig.suptitle(header, fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "growth.png", dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/synthetic_100x2.yaml")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--experiences", type=int, default=100, help="the first N experiences of the stream")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "bf16"])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--pool", type=int, default=1024, help="test samples timed at each experience")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="experiments/results/growth")
    ap.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = ap.parse_args()
    torch.set_num_threads(1)  # one core: the figure is per-sample compute, not how many cores are free
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    header = (f"device={args.device} dtype={args.dtype} batch={args.batch} threads={torch.get_num_threads()} "
              f"load average at start {' '.join(load)}")
    results = {name: run_method(name, args) for name in args.methods}
    with open("/proc/loadavg") as f:
        header += f", at end {' '.join(f.read().split()[:3])}"
    write(results, args, header)


if __name__ == "__main__":
    main()
