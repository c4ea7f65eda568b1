"""Synthetic generator speed: median images/s per task (sample + PNG encode), then end to end.

.venv/bin/python benchmarks/bench_synthetic.py [--n 300] [--repeats 5] [--size 112]
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time

from omniquality_r.data.synthetic import SAMPLERS, generate_synthetic, sample_rng


def images_per_second(task: str, n: int, size: int, offset: int) -> float:
    start = time.perf_counter()
    for i in range(offset, offset + n):
        SAMPLERS[task](sample_rng(0, task, i), size).image.save(
            io.BytesIO(), "PNG", compress_level=1
        )
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="images per task and repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=112)
    args = parser.parse_args()
    for task in SAMPLERS:
        rates = [
            images_per_second(task, args.n, args.size, r * args.n) for r in range(args.repeats)
        ]
        print(f"{task:10s} {statistics.median(rates):7.0f} images/s  (median of {args.repeats})")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        records = generate_synthetic(f"{tmp}/syn", n_per_task=args.n, image_size=args.size)
        seconds = time.perf_counter() - start
    print(f"generate_synthetic: {len(records)} images in {seconds:.2f} s "
          f"({len(records) / seconds:.0f} images/s, one process, files written)")  # fmt: skip


if __name__ == "__main__":
    main()
