import pytest
import torch

from methods.training import resolve_precision


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_where_the_cpu_has_it_in_hardware(monkeypatch, native):
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda: native, raising=False)
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if native else "no")
    assert resolve_precision("no", cpu) == "no" and resolve_precision("bf16", cpu) == "bf16"
