"""Does the perception-pretrained tower see distortions on natural photographs?

The colour photographs that scikit-image ships (PHOTOS; scikit-image is needed by this
report only) are cut into CROPS square crops each, resized to the tiny model's image size,
and distorted with the synthetic generator's own apply_distortions: every crop clean and
at each of DISTORTIONS x levels 1-4 (KADID-style, one distortion at a time). The same grid
is built on fresh procedural scenes (render_scene) for a like-for-like comparison. Read
out by the pretraining head (perception_head.safetensors) with the metrics of the held-out
report: per-type level SRCC and presence AUC, type accuracy.

.venv/bin/python benchmarks/perception_natural.py [--model FOLDER] [--cache .cache] [--out f.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from PIL import Image
from skimage import data as skdata

from omniquality_r.data.records import TASKS
from omniquality_r.data.synthetic import DISTORTIONS, MAX_LEVEL, apply_distortions, render_scene
from omniquality_r.models.loading import load_model, resolve_model_path
from omniquality_r.perception.build import ensure_perception
from omniquality_r.perception.head import load_head
from omniquality_r.perception.labels import label_vector, labels_of
from omniquality_r.perception.report import REPORT, format_metrics, predict_probs, technical_metrics
from omniquality_r.perception.stream import collate

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry",
          "retina", "rocket")  # fmt: skip
CROPS = 5  # the largest centred square, then its four quadrants


def crops(photo: np.ndarray, size: int) -> list[np.ndarray]:
    """CROPS square crops of an RGB uint8 photo, resized to size px, as float RGB in [0, 1]."""
    h, w = photo.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    boxes = [(left, top, s)] + [(left + dx * s // 2, top + dy * s // 2, s // 2)
                                for dy in (0, 1) for dx in (0, 1)]  # fmt: skip
    image = Image.fromarray(photo)
    return [np.asarray(image.crop((x, y, x + c, y + c)).resize((size, size), Image.LANCZOS),
                       np.float32) / 255 for x, y, c in boxes]  # fmt: skip


def distortion_grid(references: list[np.ndarray], seed: int):
    """Every reference clean and at each distortion type x level 1-4: (images, label vectors)."""
    rng = np.random.default_rng(seed)
    settings = [{}] + [{d: v} for d in DISTORTIONS for v in range(1, MAX_LEVEL + 1)]
    images, labels = [], []
    for ref in references:
        for levels in settings:
            images.append(apply_distortions(ref, levels, rng))
            full = {d: levels.get(d, 0) for d in DISTORTIONS}
            labels.append(label_vector(labels_of("technical", {"levels": full})))
    return images, labels


def read_out(visual, head, processor, images, labels, batch_size: int = 64) -> dict:
    task = TASKS.index("technical")
    batches = (collate(processor.image_processor, images[i:i + batch_size],
                       labels[i:i + batch_size], [task] * len(images[i:i + batch_size]))
               for i in range(0, len(images), batch_size))  # fmt: skip
    probs, y, _ = predict_probs(visual, head, batches)
    return technical_metrics(probs, y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a perception-pretrained folder; default: the tiny "
                        "model of conf/model/tiny.yaml, pretrained into --cache if missing")
    parser.add_argument("--cache", default=str(ROOT / ".cache"))
    parser.add_argument("--out", help="also write the metrics here as JSON")
    args = parser.parse_args()
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/model/tiny.yaml"))
    base = resolve_model_path("tiny", None, str(Path(args.cache) / "models"), cfg["spec"])
    path = args.model or ensure_perception(base, cfg["perception"], cfg["spec"]["image_size"])
    size = json.loads((Path(path) / REPORT).read_text())["settings"]["image_size"]
    model, processor = load_model(str(path))
    visual = model.model.visual
    head = load_head(path, visual)

    natural = [c for name in PHOTOS for c in crops(getattr(skdata, name)(), size)]
    scene_rng = np.random.default_rng(12345)
    scenes = [render_scene(scene_rng, size)[0] for _ in range(len(natural))]
    results = {}
    for name, refs in (("natural photographs", natural), ("synthetic scenes", scenes)):
        results[name] = read_out(visual, head, processor, *distortion_grid(refs, seed=0))
        print(f"== {name}: {len(refs)} references x {1 + len(DISTORTIONS) * MAX_LEVEL}")
        print(format_metrics({"technical": results[name]}))
    if args.out:
        Path(args.out).write_text(json.dumps({"model": str(path), **results}, indent=2))


if __name__ == "__main__":
    main()
