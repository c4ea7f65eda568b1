"""Small datasets in the native layouts of conf/data/paper_mix.yaml's three sources, with real
(tiny) images, for tests that load or train on them: write_ava, write_evalmuse, write_koniq.

Each writes `n` images with MOS spread over the dataset's whole range and returns the root;
from another test folder: sys.path.insert(0, str(<repo>/"tests"/"data")); import fixtures.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from PIL import Image

KONIQ_HEADER = ("image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "MOS_zscore")
EVALMUSE_MODELS = ("SDXL-Turbo", "DALLE3", "Kandinsky3")


def _image(path: Path, i: int, size: int) -> None:
    """A size x size picture, different for each i: a two-colour gradient."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.linear_gradient("L").resize((size, size)).convert("RGB")
    tint = Image.new("RGB", (size, size), (37 * i % 256, 91 * i % 256, 53 * i % 256))
    Image.blend(image, tint, 0.5).save(path)


def write_ava(root: str | Path, n: int, *, size: int = 32) -> Path:
    """AVA.txt (index, image id, 10 vote counts, 2 tags, challenge) and images/<id>.jpg."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        votes = [0] * 10
        votes[i % 10] += 3  # mean moves over 1..10 with i
        votes[(i + 3) % 10] += 1
        image_id = 953000 + i
        lines.append(" ".join(map(str, (i + 1, image_id, *votes, 1, 22, 1396))))
        _image(root / "images" / f"{image_id}.jpg", i, size)
    (root / "AVA.txt").write_text("\n".join(lines) + "\n")
    return root


def write_evalmuse(root: str | Path, n: int, *, size: int = 32) -> Path:
    """train_list.json as released (per-annotator total_score, element_score as the text of a
    dict) and images/<model>/<k>.png; two images (two models) per prompt."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(n):
        subject = ("a red fox", "a blue car", "a tall tower", "a green apple")[i // 2 % 4]
        prompt = f"{subject} number {i // 2}"
        img_path = f"{EVALMUSE_MODELS[i % len(EVALMUSE_MODELS)]}/{i:05d}.png"
        entries.append({
            "prompt_id": f"{i // 2:05d}",
            "prompt": prompt,
            "type": "real",
            "img_path": img_path,
            "total_score": [i % 5 + 1, (i + 1) % 5 + 1],
            "element_score": str({f"{subject} (object)": [i % 2, 1], "number (counting)": [0, 0]}),
            "promt_meaningless": [0, 0],
            "split_confidence": [0, 0],
            "attribute_confidence": [1, 1],
            "fidelity_label": ["no", "no"],
        })  # fmt: skip
        _image(root / "images" / img_path, i, size)
    (root / "train_list.json").write_text(json.dumps(entries, indent=4))
    return root


def write_koniq(root: str | Path, n: int, *, size: int = 32) -> Path:
    """koniq10k_scores_and_distributions.csv and 1024x768/<name>.jpg."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        name = f"{10004473376 + i}.jpg"
        mos = 1 + 4 * i / max(n - 1, 1)
        rows.append((name, 1, 5, 50, 40, 4, 100, round(mos, 4), 0.6, 50.0))
        _image(root / "1024x768" / name, i, size)
    with (root / "koniq10k_scores_and_distributions.csv").open("w", newline="") as f:
        csv.writer(f).writerows([KONIQ_HEADER, *rows])
    return root
