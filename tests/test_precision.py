"""precision: "auto" is bf16 only where the hardware runs it natively."""

import pytest
import torch

from omniquality_r import precision
from omniquality_r.perception.build import perception_folder


@pytest.fixture
def cpu(monkeypatch):
    """Pretend this CPU has (or lacks) AVX512-BF16 / AMX."""

    def set_native(native: bool):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: native)

    return set_native


def test_auto_is_fp32_on_a_cpu_without_native_bf16(cpu):
    cpu(False)
    assert not precision.native_bf16("cpu")
    assert precision.resolve_precision("auto", "cpu") == "32-true"


def test_auto_is_bf16_on_a_cpu_with_native_bf16_and_explicit_values_pass(cpu):
    cpu(True)
    assert precision.resolve_precision("auto", "cpu") == "bf16-mixed"
    assert precision.resolve_precision("16-mixed", "cpu") == "16-mixed"
    assert precision.resolve_precision(32, "cpu") == "32"


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() != "AVX2",
                    reason="this machine's CPU is not AVX2-only")  # fmt: skip
def test_this_avx2_cpu_has_no_native_bf16():
    assert not precision.cpu_has_native_bf16()
    assert precision.resolve_precision("auto", "cpu") == "32-true"


def test_the_perception_cache_key_names_the_resolved_precision(cpu, tmp_path):
    settings = {"steps": 3, "precision": "auto"}
    cpu(False)
    fp32, resolved = perception_folder(tmp_path / "tiny", settings)
    assert resolved["precision"] == "32-true"
    assert fp32 == perception_folder(tmp_path / "tiny", settings | {
        "precision": "32-true"})[0]  # fmt: skip
    cpu(True)
    bf16, resolved = perception_folder(tmp_path / "tiny", settings)
    assert resolved["precision"] == "bf16-mixed" and bf16 != fp32
