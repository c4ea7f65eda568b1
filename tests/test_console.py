"""console: Lightning's lines once under a root handler; plain progress lines in files."""

import logging

import lightning  # noqa: F401  (gives the `lightning` logger its own console handler)

from omniquality_r import console


def test_lightning_lines_print_once_under_a_root_handler(monkeypatch):
    root = logging.getLogger()
    handler = logging.StreamHandler()
    monkeypatch.setattr(root, "handlers", [handler])
    own = logging.getLogger("lightning")
    monkeypatch.setattr(own, "handlers", [logging.StreamHandler(), logging.NullHandler()])
    console.single_log_lines()
    assert not any(type(h) is logging.StreamHandler for h in own.handlers)
    assert own.propagate  # its records still reach the root handler


def test_progress_in_a_file_is_a_few_plain_lines(monkeypatch, caplog):
    monkeypatch.setattr(console, "interactive", lambda: False)
    clock = iter(range(0, 1000, 10))  # every item takes 10 s
    monkeypatch.setattr(console.time, "perf_counter", lambda: next(clock))
    with caplog.at_level(logging.INFO, logger="omniquality_r.console"):
        items = list(console.progress(range(9), desc="eval", total=9, every_s=30))
    assert items == list(range(9))
    lines = [r.getMessage() for r in caplog.records]
    assert 2 <= len(lines) <= 4 and all("\r" not in line for line in lines)
    assert lines[-1].startswith("eval (it): 9/9 in")
    assert "s left" in lines[0]


def test_progress_without_a_description_is_silent(caplog):
    with caplog.at_level(logging.INFO, logger="omniquality_r.console"):
        assert list(console.progress(range(3), desc=None)) == [0, 1, 2]
    assert not caplog.records
