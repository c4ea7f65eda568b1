"""stage=score and stage=select: the trained model as an image scorer and a best-of-N judge."""

from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf

from ..best_of_n import active_tasks, collect_candidates, select, selection_summary, write_selection
from ..scoring import (
    QualityScorer,
    collect_images,
    flatten,
    format_summary,
    score_summary,
    write_scores_csv,
)
from .common import (
    answer_generation,
    configured_model,
    instructions_of,
    output_dir,
)

log = logging.getLogger(__name__)


def scorer_of(cfg: DictConfig) -> QualityScorer:
    """A scorer over `stage.checkpoint` (or the configured model), prompts and decoding
    (common.answer_generation)."""
    generation = answer_generation(cfg)  # a wrong setting fails before the model loads
    model, processor = configured_model(cfg, cfg.stage.checkpoint)
    return QualityScorer(model, processor, instructions=instructions_of(cfg),
                         system_prompt=cfg.system_prompt, generation=generation,
                         readout=cfg.stage.readout)  # fmt: skip


def score_stage(cfg: DictConfig) -> dict:
    """Score `stage.images` for `stage.tasks`: scores.csv and a per-task summary."""
    s = cfg.stage
    images, prompts = collect_images(s.images, prompt=s.prompt or "")
    results = flatten(scorer_of(cfg).score(
        images, task=list(s.tasks or cfg.task), prompts=prompts, samples=s.samples,
        batch_size=s.batch_size, progress=True,
    ))  # fmt: skip
    path = write_scores_csv(results, output_dir(cfg) / "scores.csv")
    summary = score_summary(results)
    print(format_summary(summary))
    log.info("%d scores written to %s", len(results), path)
    return summary


def select_stage(cfg: DictConfig) -> dict:
    """Best-of-N over `stage.candidates`: ranking.csv and the winners in <run>/best/."""
    s = cfg.stage
    candidates = collect_candidates(s.candidates)
    weights = OmegaConf.to_container(s.weights, resolve=True)
    active_tasks(weights)  # bad weights fail before the model loads
    rows = select(scorer_of(cfg), candidates, weights, samples=s.samples,
                  batch_size=s.batch_size, progress=True)  # fmt: skip
    path = write_selection(rows, output_dir(cfg), link=s.link)
    summary = selection_summary(rows)
    print(f"select: {summary['winners']}/{summary['groups']} groups have a winner; mean "
          f"combined score {summary['mean_winners']:.3f} (winners) vs {summary['mean_all']:.3f} "
          f"(all); {summary['errors']} candidates with errors")  # fmt: skip
    log.info("ranking written to %s", path)
    return summary
