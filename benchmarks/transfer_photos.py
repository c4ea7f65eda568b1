"""Transfer: does the method learn quality on natural photographs with distortions the
synthetic generator never makes, better than a small CNN trained on the same split?

The set (`build_set`): scikit-image's photographs (PHOTOS), CROPS square crops each at the
tiny model's image size, every crop at each of DISTORTIONS x 4 levels, one distortion at a
time: pixelation, posterisation, salt-and-pepper noise, chromatic aberration (R and B
shifted apart) and a warm colour cast; the generator's exposure, contrast, desaturation,
blurs, gaussian noise and JPEG are all absent. MOS = 1 + 4 SSIM(distorted, clean crop) (a
full-reference proxy, colour SSIM), a rule that is neither the generator's nor the analyst's.
Written in KADID-10k's native layout (images/, dmos.csv with dist_img, ref_img, dmos), so
`data=kadid` loads it and its group, the photograph (ref_img), keeps every photo in one split.

The comparison, on the test split of that data config (seeded, split by photograph):
  method   `python run.py data=kadid data.root=<set> task=[technical]` (the whole pipeline:
           cot with the analyst fitted on the train split, SFT, GRPO 1 and 2), then
           `stage=benchmark` on its checkpoints, greedy read-out;
  cnn      a 4-layer CNN (CNN below) trained on the same train split with MSE for as many
           CPU seconds as the pipeline's training steps (sft + grpo) took.

    .venv/bin/python benchmarks/transfer_photos.py --out /tmp/transfer [--run-dir <done run>]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.stats import spearmanr
from skimage import data as skdata
from skimage.metrics import structural_similarity
from torch import nn

from omniquality_r.data.build import build_splits
from omniquality_r.data.records import load_image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from perception_natural import crops  # noqa: E402

PHOTOS = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry",
          "retina", "rocket", "cat", "camera", "coins", "moon", "brick", "grass", "gravel",
          "clock", "motorcycle")  # fmt: skip
SIZE = 112
LEVELS = 4
TRAINED_STEPS = ("sft", "grpo_stage1", "grpo_stage2")


def photo(name: str) -> np.ndarray:
    """An RGB uint8 photograph from scikit-image (grey ones as three equal channels)."""
    x = skdata.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skdata, name)()
    return np.stack([x] * 3, axis=-1) if x.ndim == 2 else x[..., :3]


def pixelate(x: np.ndarray, level: int, rng) -> np.ndarray:
    f = (2, 3, 4, 6)[level - 1]
    small = Image.fromarray((x * 255).astype(np.uint8)).resize((SIZE // f, SIZE // f), Image.BOX)
    return np.asarray(small.resize((SIZE, SIZE), Image.NEAREST), np.float32) / 255


def posterise(x: np.ndarray, level: int, rng) -> np.ndarray:
    steps = 2 ** (5, 4, 3, 2)[level - 1] - 1
    return np.round(x * steps) / steps


def salt_pepper(x: np.ndarray, level: int, rng) -> np.ndarray:
    hit = rng.random(x.shape[:2]) < (0.01, 0.03, 0.06, 0.12)[level - 1]
    out = x.copy()
    out[hit] = rng.integers(0, 2, (int(hit.sum()), 1)).astype(np.float32)
    return out


def chromatic(x: np.ndarray, level: int, rng) -> np.ndarray:
    s = (1, 2, 3, 5)[level - 1]
    out = x.copy()
    out[..., 0], out[..., 2] = np.roll(x[..., 0], s, axis=1), np.roll(x[..., 2], -s, axis=1)
    return out


def colour_cast(x: np.ndarray, level: int, rng) -> np.ndarray:
    d = (0.05, 0.1, 0.18, 0.28)[level - 1]
    return np.clip(x + np.array([d, d / 3, -d], np.float32), 0, 1)


DISTORTIONS = {"pixelate": pixelate, "posterise": posterise, "salt_pepper": salt_pepper,
               "chromatic": chromatic, "colour_cast": colour_cast}  # fmt: skip


def build_set(out: Path, seed: int = 0) -> int:
    """The set in KADID-10k's layout under `out` (module docstring); returns its size."""
    rng = np.random.default_rng(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for p, name in enumerate(PHOTOS):
        ref = f"P{p:02d}.png"
        Image.fromarray(photo(name)).save(out / "images" / ref)
        for c, clean in enumerate(crops(photo(name), SIZE)):
            for d, distort in enumerate(DISTORTIONS.values()):
                for level in range(1, LEVELS + 1):
                    x = np.clip(distort(clean, level, rng), 0, 1).astype(np.float32)
                    ssim = structural_similarity(clean, x, channel_axis=-1, data_range=1.0)
                    dist = f"P{p:02d}_c{c}_{d + 1:02d}_{level:02d}.png"
                    Image.fromarray((x * 255).round().astype(np.uint8)).save(out / "images" / dist)
                    rows.append((dist, ref, round(1 + 4 * max(ssim, 0.0), 4), 0.0))
    with (out / "dmos.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("dist_img", "ref_img", "dmos", "var"), *rows])
    return len(rows)


def splits(root: Path):
    """The train and test records of `data=kadid data.root=root` (conf/data/kadid.yaml)."""
    s = build_splits({"kadid": {"loader": "kadid", "root": str(root)}}, ["technical"], seed=0,
                     val=0.1, test=0.2)  # fmt: skip
    return s["train"], s["test"]


class CNN(nn.Module):
    """Four stride-2 conv + ReLU layers (16-32-64-64), global average pool, linear -> MOS/5."""

    def __init__(self):
        super().__init__()
        widths = (3, 16, 32, 64, 64)
        layers = [m for a, b in itertools.pairwise(widths)
                  for m in (nn.Conv2d(a, b, 3, stride=2, padding=1), nn.ReLU())]  # fmt: skip
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(64, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(-1)


def tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
    x = np.stack([np.asarray(load_image(p), np.float32) / 255 for p in ds["image"]])
    return torch.from_numpy(x).permute(0, 3, 1, 2), torch.tensor(ds["mos"], dtype=torch.float32)


def train_cnn(train, test, seconds: float, seed: int = 0) -> dict:
    """The CNN trained for `seconds` (Adam 1e-3, batch 32, MSE on MOS / 5); its test SRCC."""
    torch.manual_seed(seed)
    (x, y), (xt, yt) = tensors(train), tensors(test)
    model, gen = CNN(), torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        for idx in torch.randperm(len(x), generator=gen).split(32):
            loss = ((model(x[idx]) - y[idx] / 5) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            if time.perf_counter() - start >= seconds:
                break
    with torch.no_grad():
        pred = model.eval()(xt).numpy()
    return {"srcc": float(spearmanr(pred, yt.numpy()).statistic), "steps": steps,
            "seconds": time.perf_counter() - start}  # fmt: skip


def run(args: list[str]) -> None:
    subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, check=True,
                   env={**os.environ, "OMNIQUALITY_CACHE": os.environ.get(
                       "OMNIQUALITY_CACHE", str(ROOT / ".cache"))})  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the set and runs")
    parser.add_argument("--run-dir", type=Path, help="a finished pipeline run on the set")
    args = parser.parse_args()
    root = args.out / "photos_kadid"
    if not (root / "dmos.csv").is_file():
        print(f"built {build_set(root)} distorted images in {root}")
    data = ["data=kadid", f"data.root={root}", "task=[technical]"]
    run_dir = args.run_dir or args.out / "pipeline"
    if not (run_dir / "summary.json").is_file():
        run([*data, f"hydra.run.dir={run_dir}"])
    bench = args.out / "benchmark"
    if not (bench / "benchmark.json").is_file():
        run(["stage=benchmark", f"stage.run_dir={run_dir}", "stage.readouts=[greedy]",
             "task=[technical]", "~stage.datasets.synthetic", "+data@stage.datasets.photos=kadid",
             f"stage.datasets.photos.root={root}", f"hydra.run.dir={bench}"])  # fmt: skip
    rows = json.loads((bench / "benchmark.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    seconds = sum(summary[s]["wall_s"] for s in TRAINED_STEPS)
    train, test = splits(root)
    cnn = train_cnn(train, test, seconds)
    cot = summary["cot"]["result"]
    accepted = [a for a in cot["acceptance"] if a["split"] == "train" and a["dataset"] == "all"]
    print(f"\nCPU {torch.backends.cpu.get_cpu_capability()}; set {root}: {len(train)} train, "
          f"{len(test)} test records (by photograph)")
    print(f"analyst teacher (train): SRCC {accepted[0]['teacher_srcc']:.3f}, "
          f"{accepted[0]['acceptance_rate']:.0%} of trajectories accepted, "
          f"{cot['written']} of {cot['records']} records kept")
    print("| model | test SRCC | training CPU s |\n|---|---|---|")
    for r in rows:
        print(f"| {r['checkpoint']} | {r['srcc']:.3f} | |")
    print(f"| cnn ({cnn['steps']} steps) | {cnn['srcc']:.3f} | {cnn['seconds']:.0f} |")
    print(f"(the method's training steps took {seconds:.0f} s)")


if __name__ == "__main__":
    main()
