"""GRPO's gradient clipping (modules/grpo.clip_grad_norm) on one process; DeepSpeed's is its
engine's (tests/e2e/test_sweeps.py: the Trainer node hands it algo.grad_clip)."""

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import SingleDeviceStrategy

from omniquality_r.modules.grpo import clip_grad_norm


class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.layer = torch.nn.Linear(4, 4)
        self.norms: list[float] = []

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        self.manual_backward(self.layer(batch).pow(2).sum() * 100)
        clip_grad_norm(self.trainer.strategy, self, opt, 1.0)
        grads = torch.cat([p.grad.flatten() for p in self.parameters()])
        self.norms.append(float(grads.norm()))
        opt.step()
        opt.zero_grad()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_clips_to_the_global_norm_on_one_process():
    module = Tiny()
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(module, torch.utils.data.DataLoader(torch.randn(4, 4), batch_size=2))
    assert isinstance(trainer.strategy, SingleDeviceStrategy)
    assert module.norms == pytest.approx([1.0, 1.0], abs=1e-5)

