"""What keying the decode cache on file content costs, against the old key of sizes and mtimes: a folder of
1,797 small PNGs (scikit-learn's digits, 24x24 grey, as `make_av_folders.py` writes them), read through
`image_folder` with a warm decode cache, in one process, files in the page cache.

    python experiments/bench_decode_key.py [--repeats 7]

Times the key alone (stat of every file vs SHA-256 of every file, a fresh per-process memo each time)
and a whole cache hit (list the folder, key it, read the cached arrays). The old key is re-created here
as it was: (path, size, mtime_ns) per file."""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def write_digits(root: Path) -> list[Path]:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (img, label) in enumerate(zip(digits.images, digits.target)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((img * 16).clip(0, 255).astype(np.uint8)).resize((24, 24)).save(folder / f"{i}.png")
    return sorted(root.rglob("*.png"))


def mtime_key(paths: list[Path]) -> list[tuple[str, int, int]]:
    out = []
    for p in paths:
        st = os.stat(p)
        out.append((str(p), st.st_size, st.st_mtime_ns))
    return out


def timed(fn, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_decode_key_"))
    os.environ["LIFELONG_MOE_CACHE"] = str(work / "cache")
    from lifelong_moe.registry import resolve_params
    from scenarios import cache
    from scenarios.sources import SOURCES, load_source

    paths = write_digits(work / "digits")
    size = sum(p.stat().st_size for p in paths)

    def content_key() -> None:
        cache._FILE_HASHES.clear()  # a new process: nothing memoised
        cache.files_fingerprint(paths)

    key_mtime, key_content = timed(lambda: mtime_key(paths), args.repeats), timed(content_key, args.repeats)

    params = resolve_params(SOURCES, "image_folder", {"root": str(work / "digits"), "size": [24, 24]}, "params")
    load_source("image_folder", params, 0)  # decode once: the cache is warm from here on

    def hit() -> None:
        cache._FILE_HASHES.clear()
        load_source("image_folder", params, 0)

    hit_c = timed(hit, args.repeats)
    from scenarios.sources import image_folder

    content = image_folder.files_fingerprint
    image_folder.files_fingerprint = lambda files, root=None: mtime_key(files)  # the old key
    try:
        hit()  # its own cache entry, written once
        hit_m = timed(hit, args.repeats)
    finally:
        image_folder.files_fingerprint = content
    print(f"{len(paths)} PNGs, {size / 1024:.0f} KiB in all; median of {args.repeats}; {os.cpu_count()} CPUs")
    print(f"key alone:      mtime {key_mtime * 1e3:7.1f} ms | content {key_content * 1e3:7.1f} ms | ratio {key_content / key_mtime:5.1f}x")
    print(f"warm cache hit: mtime {hit_m * 1e3:7.1f} ms | content {hit_c * 1e3:7.1f} ms | ratio {hit_c / hit_m:5.2f}x")


if __name__ == "__main__":
    main()
