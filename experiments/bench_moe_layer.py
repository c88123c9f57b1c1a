"""Forward + backward throughput of one MoE layer against a dense FFN block doing the same active work.

4096 tokens, width 256, expert hidden 512, top-2; the dense block has hidden 2 * 512 = 1024, so each token
costs the same matmul FLOPs in both. Both blocks include the pre-norm and the residual; the MoE layer also
pays for its router and auxiliary losses. Ratios are dense time / MoE time (1.0 = as fast as dense), all
measured in one process. The experts come from two growth steps (n-2 older, 2 newest); the last columns
time the same layer with the older ones frozen (no weight gradients). The GEMM-only bounds are the ratio of
the bare GEMMs alone, split evenly over the experts: what the hardware allows a one-matmul-pair-per-expert
layer, with each GEMM's output freed at once (`freed`: the next GEMM reuses hot memory) or kept to the end
of the step (`kept`: as a real step keeps its activations and every expert's weight gradient). The last
columns give the layer's ratio as a share of each bound (1.0: the layer costs only its GEMMs): from the
medians of the repeats, and from their least times (steadier on a shared machine, where noise and page
faults on fresh buffers only ever add time).

    python experiments/bench_moe_layer.py [--device cpu|cuda] [--dtype float32|bf16] [--experts 4 16 64 256] [--threads 1]

One CPU thread by default, as the other benchmarks here: the ratio is then per-core compute, not how the GEMM
library splits a large matrix and a small one over the free cores (with 2 threads the dense block gains from
the second core and the 16-token GEMMs hardly do).
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch
from torch import nn

from lifelong_moe.moe import MoELayer
from timing import step_times


class DenseBlock(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(self.norm(x))


def matmul_bound(tokens: int, dim: int, hidden: int, k: int, n_experts: int, device: str, repeats: int,
                 keep: bool = False) -> tuple[float, float]:
    """Dense time / per-expert time of the bare GEMMs of a GELU MLP (forward: x W1^T, h W2^T; backward:
    g^T h, g W2, gh^T x, gh W1), tokens split evenly over the experts: the best ratio any layer that runs
    one matmul pair per expert could reach, before routing, sorting or gathering cost anything. `keep`:
    every output has its own buffer that lives through the step (as activations and weight gradients do).
    Returns the ratio of the medians and the ratio of the least times."""

    def gemms(m: int, width: int, count: int):
        # distinct tensors per expert, as real experts have: reusing one set would keep it cache-hot
        sets = [(torch.randn(m, dim, device=device), torch.randn(m, dim, device=device), torch.randn(m, width, device=device),
                 torch.randn(m, width, device=device), torch.randn(width, dim, device=device), torch.randn(dim, width, device=device))
                for _ in range(count)]

        # keep: each GEMM writes its own output buffer, allocated and touched once, so outputs stay distinct (cold
        # to the cache, as a step's activations and gradients are) without the page faults of fresh allocations,
        # whose cost moved this bound by half between runs
        outs = [(torch.empty(m, width, device=device), torch.empty(m, dim, device=device), torch.empty(dim, width, device=device),
                 torch.empty(m, width, device=device), torch.empty(width, dim, device=device), torch.empty(m, dim, device=device))
                for _ in range(count)] if keep else []

        def run() -> None:
            if keep:
                for (x, g, h, gh, w1, w2), o in zip(sets, outs, strict=True):
                    torch.mm(x, w1.T, out=o[0]), torch.mm(h, w2.T, out=o[1]), torch.mm(g.T, h, out=o[2])
                    torch.mm(g, w2, out=o[3]), torch.mm(gh.T, x, out=o[4]), torch.mm(gh, w1, out=o[5])
            else:
                for x, g, h, gh, w1, w2 in sets:
                    (x @ w1.T, h @ w2.T, g.T @ h, g @ w2, gh.T @ x, gh @ w1)

        return run

    per_expert = gemms(max(tokens * k // n_experts, 1), hidden, n_experts)
    dense = gemms(tokens, k * hidden, 1)
    d, e = step_times(dense, device, repeats), step_times(per_expert, device, repeats)
    return statistics.median(d) / statistics.median(e), min(d) / min(e)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "bf16"])
    ap.add_argument("--experts", type=int, nargs="+", default=[4, 16, 64, 256])
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev, dtype = args.device, torch.bfloat16 if args.dtype in ("bf16", "bfloat16") else torch.float32
    x = torch.randn(args.tokens, args.dim, device=dev)

    def step_of(block):
        def step():
            block.zero_grad(set_to_none=True)
            with torch.autocast(device_type=dev, dtype=dtype, enabled=dtype != torch.float32):
                out = block(x)
                y = out.hidden + 0.01 * (out.balance_loss + out.z_loss) if hasattr(out, "hidden") else out
            y.float().pow(2).mean().backward()
        return step

    dense = DenseBlock(args.dim, args.k * args.hidden).to(dev)
    print(f"device={dev} dtype={args.dtype} tokens={args.tokens} d={args.dim} hidden={args.hidden} top-{args.k} "
          f"threads={torch.get_num_threads()} load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("| experts | dense ms | MoE ms | dense/MoE | MoE, all but 2 frozen ms | dense/frozen-MoE | GEMM-only bound, freed | kept "
          "| MoE / bound, freed | kept | frozen-MoE / bound, freed | kept | least times: MoE / bound, kept | frozen-MoE / bound, kept |"
          "\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n in args.experts:
        layer = MoELayer(args.dim, args.hidden, args.k).to(dev)
        layer.grow(n - 2, group=0)  # as after a stream: the old experts' bank, then the newest 2
        layer.grow(2, group=1)
        dense_t = step_times(step_of(dense), dev, args.repeats)  # interleaved with each MoE size
        moe_t = step_times(step_of(layer), dev, args.repeats)
        for expert in layer.pool.experts_of(group=0):
            expert.requires_grad_(False)
        frozen_t = step_times(step_of(layer), dev, args.repeats)
        (freed, _), (kept, kept_least) = (matmul_bound(args.tokens, args.dim, args.hidden, args.k, n, dev, args.repeats, keep)
                                          for keep in (False, True))
        t_dense, t_moe, t_frozen = (statistics.median(t) for t in (dense_t, moe_t, frozen_t))
        moe, frozen = t_dense / t_moe, t_dense / t_frozen
        moe_least, frozen_least = min(dense_t) / min(moe_t) / kept_least, min(dense_t) / min(frozen_t) / kept_least
        print(f"| {n} | {t_dense * 1e3:.1f} | {t_moe * 1e3:.1f} | {moe:.2f} | {t_frozen * 1e3:.1f} | {frozen:.2f} | {freed:.2f} | {kept:.2f} "
              f"| {moe / freed:.2f} | {moe / kept:.2f} | {frozen / freed:.2f} | {frozen / kept:.2f} | {moe_least:.2f} | {frozen_least:.2f} |")
    print(f"load average at the end {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
