"""OmniQuality-R as a reward function for TRL's GRPOTrainer (or any trainer calling
`f(prompts=..., completions=..., **dataset_columns) -> list[float]`).

    scorer = QualityScorer.from_pretrained("path/to/checkpoint")
    trainer = GRPOTrainer(model=policy, train_dataset=ds, reward_funcs=[
        QualityReward(scorer, "alignment", image_column="image_path"),  # caption <-> image
        QualityReward(scorer, "aesthetic", image_column=None),           # completion = image path
    ], ...)

Per sample, the image is taken from the dataset column `image_column` (a path, PIL image or
array; TRL hands every dataset column to reward functions) or, when `image_column` is None,
from the completion text as an image path (a generator policy that writes files). For
alignment the prompt judged against the image is the completion's text (`text="completion"`:
a captioning policy) or the prompt's (`text="prompt"`: images generated for the prompt).
The reward is the 0-5 score. A sample with no valid score (an answer outside [0, 5], not a
bare number, with text after </answer> or without an answer tag: prompts.read_answer; or an
image that cannot be read) gets `fallback`: 0.0 by default, the bottom of the scale, so an
invalid judgement never pays; `fallback=None` returns None instead, which TRL reads as NaN and
leaves out of the group baseline. The reasoning (or the error naming the reason) goes to
TRL's completions table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .scoring import QualityScorer


def text_of(item) -> str:
    """Plain text of a TRL prompt/completion: a string, or the last message of a conversation."""
    if isinstance(item, str):
        return item
    content = item[-1]["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if part.get("type") == "text")


class QualityReward:
    """A TRL reward callable that scores one image per sample for `task` (see module doc)."""

    def __init__(self, scorer: QualityScorer, task: str = "aesthetic", *,
                 image_column: str | None = "image", text: str = "completion", samples: int = 1,
                 batch_size: int = 8, fallback: float | None = 0.0):  # fmt: skip
        if text not in ("completion", "prompt"):
            raise ValueError(f"text must be 'completion' or 'prompt', got {text!r}")
        self.scorer, self.task, self.image_column, self.text = scorer, task, image_column, text
        self.samples, self.batch_size, self.fallback = samples, batch_size, fallback
        self.__name__ = f"omniquality_{task}"  # TRL's name for the reward in its logs

    def __call__(self, prompts: Sequence, completions: Sequence, log_extra=None,
                 **columns) -> list[float | None]:  # fmt: skip
        if self.image_column is None:
            images = [text_of(c).strip() for c in completions]
        elif self.image_column in columns:
            images = list(columns[self.image_column])
        else:
            raise KeyError(f"reward {self.__name__}: no dataset column {self.image_column!r}; "
                           f"columns: {sorted(columns)}")  # fmt: skip
        source = completions if self.text == "completion" else prompts
        texts = [text_of(x).strip() for x in source]
        results = self.scorer.score(images, task=self.task, prompts=texts, samples=self.samples,
                                    batch_size=self.batch_size)  # fmt: skip
        if log_extra is not None:
            log_extra(f"{self.__name__}_reasoning", [r.error or r.reasoning for r in results])
        return [r.score if math.isfinite(r.score) else self.fallback for r in results]
