"""Per-sample inference time of the lifelong MoE after experience 1 against after experience T (the
20-experience stream by default), measured side by side in one process on the same test samples, plus
the size of the class statistics at both points.

    python experiments/bench_inference_scaling.py [--config configs/synthetic_20x2.yaml] [--repeats 7]
        [--device cpu|cuda] [--dtype float32|bf16] [--order stream|mixed]

Training quality does not enter inference cost, so experiences train for `--epochs` (default 1). The
model after experience 1 is kept (a deep copy) and timed against the model after experience T batch by
batch in turn; `ratio` compares the sums of each batch's least time over the repeats (noise on a shared
machine only adds time), `ratio_median_of_passes` the medians of whole passes taken in turn. The test
samples come in stream order (a batch spans a few test experiences, as the evaluator reads them) or
shuffled (`mixed`: every experience in every batch, the worst case for dispatch by routed group). One
thread on CPU; the load average is printed.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics

import lightning as L
import torch
from torch.utils.data import ConcatDataset, DataLoader

from lifelong_moe import build_model, load_config
from lifelong_moe.features import build_experiment_stream
from lifelong_moe.training import fit_experience
from timing import inference_pass_seconds, interleaved_per_sample_seconds, to_device


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/synthetic_20x2.yaml")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-sizes", default="64,256,1024", help="evaluation batch sizes to time, comma-separated")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "bf16"])
    ap.add_argument("--order", default="stream", choices=["stream", "mixed"], help="test samples in stream order or shuffled")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    cfg = load_config(args.config, ["trainer.enable_progress_bar=false", f"trainer.accelerator={args.device}", "trainer.devices=1",
                                    f"train.epochs={args.epochs}", *(["trainer.precision=bf16-mixed"] if args.dtype == "bf16" else []),
                                    *args.overrides])
    L.seed_everything(cfg.seed, verbose=False)
    torch.set_num_threads(1)  # one core: the figure is per-sample compute, not how many cores are free
    load_start = os.getloadavg()
    stream = build_experiment_stream(cfg)
    test = ConcatDataset([e.dataset for e in stream.test_stream])
    test.collate_fn = getattr(stream.test_stream[0].dataset, "collate_fn", None)
    model = build_model(cfg, stream).to(args.device)
    first = None
    for i, exp in enumerate(stream.train_stream):
        model.on_experience_start(exp)
        model.to(args.device)
        fit_experience(model, exp.dataset, cfg.train, cfg.trainer, seed=i, logger=False)
        model.on_experience_end(exp)
        if i == 0:
            first = copy.deepcopy(model)
    T = len(stream.train_stream)
    out = {"config": args.config, "experiences": T, "test_samples": len(test), "device": args.device, "dtype": args.dtype,
           "order": args.order, "threads": torch.get_num_threads(),
           "stored_bytes_after_1": first.stored_bytes(), f"stored_bytes_after_{T}": model.stored_bytes(),
           "parameters_after_1": first.parameter_counts(), f"parameters_after_{T}": model.parameter_counts(), "timings": []}
    for size in (int(s) for s in args.batch_sizes.split(",")):
        shuffle = torch.Generator().manual_seed(0) if args.order == "mixed" else None
        batches = [to_device(b, args.device) for b in
                   DataLoader(test, batch_size=size, collate_fn=test.collate_fn, shuffle=shuffle is not None, generator=shuffle)]
        a, b = interleaved_per_sample_seconds([first, model], batches, args.device, dtype, args.repeats)
        t_first, t_last = [], []  # whole passes in turn, as earlier versions of this script reported
        for _ in range(args.repeats):
            t_first.append(inference_pass_seconds(first, batches, args.device, dtype))
            t_last.append(inference_pass_seconds(model, batches, args.device, dtype))
        out["timings"].append({"batch_size": size, "per_sample_us_after_1": round(a * 1e6, 1),
                               f"per_sample_us_after_{T}": round(b * 1e6, 1), "ratio": round(b / a, 3),
                               "ratio_median_of_passes": round(statistics.median(t_last) / statistics.median(t_first), 3)})
    out["load_average"] = {"start": [round(v, 2) for v in load_start], "end": [round(v, 2) for v in os.getloadavg()]}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
