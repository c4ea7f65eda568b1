"""OmniQuality-R: the single entry point. `python run.py stage=<name> <overrides>`."""

import os

# OpenMP threads that spin while they wait make every small op crawl once another process
# shares the cores (measured here: a 16x256 linear 150x slower on 2 busy cores). Must be set
# before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

    from omniquality_r.data.records import DataError  # heavy imports only when a stage runs
    from omniquality_r.settings import ConfigError
    from omniquality_r.stages import run_stage

    # Input the user can fix (a bad dataset or config value, a `???` left unset): one line.
    user_errors = (DataError, ConfigError, MissingMandatoryValue, InterpolationToMissingValueError)
    try:
        run_stage(cfg)
    except user_errors as err:
        if cfg.debug:
            raise
        message = " ".join(str(err).split())  # omegaconf's errors span lines (full_key: ...)
        print(f"error: {message} (debug=true shows the traceback)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
