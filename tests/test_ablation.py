"""The ablation table's arithmetic: several MPS searches per adapted supernet (mps.stages.ablation)."""

from __future__ import annotations

import pandas as pd
import pytest

from mps.artifacts import ArtifactError
from mps.stages.ablation import METRICS, read_run, summarise


def _run(variant: str, seed: int, draw: int, analog: float, best: float) -> dict:
    row = {m: 1.0 for m in METRICS}
    return {**row, "variant": variant, "seed": seed, "draw": draw, "analog_ref": analog, "best_analog_mapping": best}


def test_summary_counts_seeds_and_searches_and_averages_every_search():
    runs = pd.DataFrame([
        # one supernet's searches repeat its paths; the MPS column varies with the search
        _run("mps", 0, 0, 91.0, 92.0), _run("mps", 0, 1, 91.0, 91.0),
        _run("mps", 1, 0, 90.0, 92.5), _run("mps", 1, 1, 90.0, 91.5),
        _run("qat", 0, 0, 89.0, 90.0), _run("qat", 0, 1, 89.0, float("nan")),  # a set with no >= 70 % mapping
    ])
    table = summarise(runs, ["qat", "mps"]).set_index("variant")
    assert list(table.index) == ["qat", "mps"]
    assert table.loc["mps", "seeds"] == 2 and table.loc["mps", "searches"] == 4
    assert table.loc["qat", "seeds"] == 1 and table.loc["qat", "searches"] == 2
    # the path's mean and std over the seed x search runs are those over seeds (each repeated alike)
    assert table.loc["mps", "analog_ref"] == pytest.approx(90.5)
    assert table.loc["mps", "analog_ref_std"] == pytest.approx(0.5)
    assert table.loc["mps", "best_analog_mapping"] == pytest.approx(91.75)
    assert table.loc["qat", "best_analog_mapping"] == pytest.approx(90.0)  # NaN runs left out


def test_a_run_outside_the_search_layout_is_refused_with_the_fix(tmp_path):
    # the layout before several searches per supernet: <variant>/r<seed>/evaluate/results.csv
    old = tmp_path / "mps" / "r0" / "evaluate" / "results.csv"
    old.parent.mkdir(parents=True)
    old.write_text("Method\n")
    with pytest.raises(ArtifactError, match=r"<variant>/r<seed>/d<draw>/evaluate/results.csv.*fix"):
        read_run(old, 70.0, 86400.0, 5.0)
