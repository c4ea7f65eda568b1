"""OmniQuality-R: the single entry point. `python run.py stage=<name> <overrides>`."""

import os

# OpenMP threads that spin while they wait make every small op crawl once another process
# shares the cores (measured here: a 16x256 linear 150x slower on 2 busy cores). Must be set
# before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from omniquality_r.stages import run_stage  # heavy imports only when a stage runs

    run_stage(cfg)


if __name__ == "__main__":
    main()
