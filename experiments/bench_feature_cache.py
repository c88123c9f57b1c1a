"""How much the disk caches save: decoding a folder of images (cold vs warm decode cache) and encoding it
with a frozen timm ViT (first run vs second run, each in a fresh process, as two experiments would be).

    python experiments/bench_feature_cache.py data/av_digits/images --model vit_tiny_patch16_224

The weights are a random initialisation saved to a local file (nothing is downloaded); the encoder's
cost does not depend on the values of its weights. The caches go to a fresh temporary folder."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="an image_folder root (class sub-folders)")
    parser.add_argument("--model", default="vit_tiny_patch16_224")
    parser.add_argument("--size", type=int, default=32, help="decoded image size (the encoder resizes to its own)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--audio", type=Path, help="also time decoding this audio_folder root (log-mel, 16 kHz, 1 s)")
    args = parser.parse_args()

    import timm
    from safetensors.torch import save_file

    work = Path(tempfile.mkdtemp(prefix="bench_cache_"))
    env = {**os.environ, "LIFELONG_MOE_CACHE": str(work / "cache")}
    weights = work / f"{args.model}.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model(args.model, pretrained=False).state_dict().items()}, str(weights))

    # decoding, in this process: cold cache, then warm
    os.environ["LIFELONG_MOE_CACHE"] = env["LIFELONG_MOE_CACHE"]
    from lifelong_moe.registry import resolve_params
    from scenarios.sources import SOURCES, load_source
    from scenarios.sources import base as sources_base

    params = resolve_params(SOURCES, "image_folder", {"root": str(args.root), "size": [args.size, args.size]}, "params")
    decode = []
    for _ in range(2):
        sources_base._CACHE.clear()
        t0 = time.perf_counter()
        data = load_source("image_folder", params, 0)
        decode.append(time.perf_counter() - t0)
    n = len(data.train) + len(data.test)
    audio = []
    if args.audio:
        audio_params = resolve_params(SOURCES, "audio_folder", {"root": str(args.audio)}, "params")
        for _ in range(2):
            sources_base._CACHE.clear()
            t0 = time.perf_counter()
            clips = load_source("audio_folder", audio_params, 0)
            audio.append(time.perf_counter() - t0)

    cfg = {"name": "bench", "stream": {"sources": {"img": {"kind": "image_folder", "params": {"root": str(args.root.resolve()), "size": [args.size, args.size]}}},
                                       "split": {"source": "img", "n_experiences": 2}},
           "pretrained": {"image": {"kind": "timm", "name": args.model, "weights": str(weights), "device": args.device, "batch_size": args.batch_size}}}
    (work / "bench.yaml").write_text(yaml.safe_dump(cfg))
    encode, wall = [], []
    for _ in range(2):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "lifelong_moe.cli", "validate", str(work / "bench.yaml")], capture_output=True, text=True, env=env)
        wall.append(time.perf_counter() - t0)
        if proc.returncode:
            sys.exit(proc.stderr)
        line = next(ln for ln in proc.stdout.splitlines() if "pretrained image" in ln)
        encode.append(float(re.search(r"in ([0-9.]+)s$", line).group(1)))
        print(line)
    print(f"\n{n} images from {args.root}, decoded to {args.size}x{args.size}; encoder timm {args.model} ({args.device})\n")
    print("| step | first run (s) | second run (s) | speed-up |")
    print("|---|---|---|---|")
    print(f"| decode images (image_folder) | {decode[0]:.2f} | {decode[1]:.3f} | {decode[0] / decode[1]:.0f}x |")
    if audio:
        m = len(clips.train) + len(clips.test)
        print(f"| decode {m} clips to log-mel (audio_folder) | {audio[0]:.2f} | {audio[1]:.3f} | {audio[0] / audio[1]:.0f}x |")
    print(f"| encode with the frozen ViT (feature cache) | {encode[0]:.2f} | {encode[1]:.3f} | {encode[0] / encode[1]:.0f}x |")
    print(f"| whole `lifelong-moe validate` (fresh process) | {wall[0]:.1f} | {wall[1]:.1f} | {wall[0] / wall[1]:.1f}x |")


if __name__ == "__main__":
    main()
