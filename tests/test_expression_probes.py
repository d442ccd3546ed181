"""scripts/expression_probes.py (issue 3's diagnostics) runs end to end: one step of each probe."""

import pytest

import helpers


def _probes():
  return helpers.load_script("expression_probes")


@pytest.mark.slow
@pytest.mark.parametrize("probe", ["supervised", "oracle", "l1"])
def test_each_probe_trains_and_reports(probe, capsys):
  assert _probes().main([probe, "--steps=1", "--every=1", "--batch_size=4"]) == 0
  lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith(f"{probe} step")]
  assert [l.split()[2] for l in lines] == ["0", "1"]
  assert all("within speakers" in l and "loss" in l for l in lines)
