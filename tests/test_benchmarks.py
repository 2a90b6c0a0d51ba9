"""Benchmarks: the quick harness runs on the tiny profile and writes its dated table; the
claims figure reads an evaluate run correctly and says so when there is none."""

from __future__ import annotations

import datetime as dt
import json

import sys

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, TINY_PARAMS, tiny_params

if str(REPO) not in sys.path:  # benchmarks/ is not an installed package; a bare `pytest` lacks the repo root
    sys.path.insert(0, str(REPO))

from benchmarks import claims, run  # noqa: E402
from benchmarks.common import Inputs, Stats, interleaved, ratio  # noqa: E402


def test_quick_benchmark_writes_dated_table(tiny_data, tiny_pretrained, tiny_supernet, tmp_path):
    out = tmp_path / "out"
    rc = run.main(["--quick", "--runs", "1", "--out", str(out), "--params", str(TINY_PARAMS),
                   "--run-dir", str(tmp_path / "no-run"), "--data-dir", str(tiny_data),
                   "--bench-dir", str(tmp_path / "no-bench"), "--supernet", str(tiny_supernet),
                   "--pretrained", str(tiny_pretrained)])
    assert rc == 0
    date = dt.datetime.now(dt.timezone.utc).date().isoformat()
    md = (out / f"{date}-bench.md").read_text()
    table = pd.read_csv(out / f"{date}-bench.csv", keep_default_na=False)
    for title in ("1. Mapping time", "2. The paper's accuracy claims", "3. Analog evaluation throughput",
                  "4. Training step cost", "5. End to end", "7. Growth with the network", "## Machine",
                  "torch_threads", "aihwkit"):
        assert title in md
    assert set(table["figure"]) == {"mapping", "claims", "throughput", "training", "e2e", "hwa_engine", "growth"}
    assert not table["note"].str.contains("FAILED").any()
    # no evaluate run in the run dir: the claims figure says so instead of inventing numbers
    claim_rows = table[table["figure"] == "claims"]
    assert list(claim_rows["value"]) == ["n/a"] and "missing" in claim_rows["note"].iloc[0]

    def value(measure: str) -> float:
        row = table[table["measure"] == measure]
        assert len(row) == 1, measure
        return float(row["value"].iloc[0])

    assert value("mps: evaluations used") <= 6 and value("nsga2: evaluations used") == 6
    assert 0 <= value("mps: hypervolume") <= 1.1 ** 3
    assert value("all-analog sub-network: program + drift + forward (batch 256)") > 0
    # the allocator speed-up must reproduce the default's accuracies exactly
    verdicts = table[table["measure"].str.match(r"^evaluator: [^:]*\)$")]["note"]
    assert len(verdicts) == 2 and verdicts.str.startswith("identical").all(), verdicts.tolist()
    fair = table[table["measure"] == "fairness step speed-up from tuned malloc"]
    assert list(fair["note"]) == ["identical losses"]
    assert value("mps: time outside evaluations (the method's own work)") >= 0
    assert {"machine_cpu", "machine_cores", "machine_torch_threads", "machine_torch",
            "machine_aihwkit"} <= set(table.columns)


def _write_run(run_dir, layers: list[str], params_per_layer: dict[str, int]) -> None:
    """A small evaluate run: fp32 90 %, all-analog 80/70 %, two MPS mappings, one greedy."""
    ev = run_dir / "evaluate"
    ev.mkdir(parents=True)
    rows = [  # method, mapping, accuracy at 1 d (reference), analog MAC %
        ("fp32", "fp32", 90.0, 0.0), ("analog", "analog", 80.0, 100.0),
        ("mps", "mps-00", 89.5, 60.0), ("mps", "mps-01", 84.0, 75.0), ("greedy", "greedy-00", 89.2, 20.0)]
    pd.DataFrame([{"Model": "resnet8", "Method": m, "Mapping": n, "Accuracy_mean": a, "Accuracy_std": 0.0,
                   "Analog_MAC_Ratio_percent": r} for m, n, a, r in rows]).to_csv(ev / "results.csv", index=False)
    drift = []
    for m, n, a, _ in rows:
        for t, shift in ((86400.0, 0.0), (31536000.0, -10.0 if n == "analog" else -2.0)):
            for rep, d in ((0, -0.5), (1, 0.5)):
                drift.append({"mapping": n, "method": m, "drift_time": t, "repeat": rep,
                              "accuracy": a + shift + (0.0 if m == "fp32" else d)})
    pd.DataFrame(drift).to_csv(ev / "drift.csv", index=False)
    maps = run_dir / "search" / "mappings"
    maps.mkdir(parents=True)
    first = layers[0]
    ops = {"fp32": {n: "fp32" for n in layers}, "analog": {n: "analog" for n in layers},
           "mps-00": {n: ("int8" if n == first else "analog") for n in layers},
           "mps-01": {n: "analog" for n in layers}, "greedy-00": {n: ("analog" if n == first else "int8") for n in layers}}
    for name, mapping in ops.items():
        (maps / f"{name}.json").write_text(json.dumps({"name": name, "layers": mapping}))


def test_claims_read_from_an_evaluate_run(tiny_supernet, tmp_path):
    params_of = claims.layer_params(Inputs(tiny_params(), True, tmp_path, tmp_path, tmp_path, 1, 1,
                                           supernet_path=tiny_supernet))
    assert params_of and all(v > 0 for v in params_of.values())
    layers = list(params_of)
    run_dir = tmp_path / "run"
    _write_run(run_dir, layers, params_of)
    inp = Inputs(tiny_params(), True, run_dir, tmp_path, tmp_path, 1, 1, supernet_path=tiny_supernet)
    fig = claims.run(inp)
    got = {r.measure: r for r in fig.rows}
    best = got["best MPS mapping with >= 70 % analog MACs"]
    assert best.value == "mps-01"
    assert got["best MPS mapping - all-analog at 1 day"].value == pytest.approx(84.0 - 80.0)
    assert got["best MPS mapping - all-analog at 1 year"].value == pytest.approx((84.0 - 2.0) - (80.0 - 10.0))
    share = 100.0 * (sum(params_of.values()) - params_of[layers[0]]) / sum(params_of.values())
    assert got["largest analog weight share within 1 point of FP32 (MPS)"].value == pytest.approx(share)
    # any method: greedy-00 (89.2 %) is within 1 point too, but with a smaller analog share
    assert got["largest analog weight share within 1 point of FP32 (any method)"].value == pytest.approx(share)


def test_interleaved_ratios_pair_rounds():
    calls = []
    stats = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, runs=3, warmup=1)
    assert calls == ["a", "b"] * 4 and stats["a"].n == 3
    r = ratio(Stats([2.0, 4.0, 9.0]), Stats([1.0, 2.0, 3.0]))
    assert r.values == [2.0, 2.0, 3.0] and r.median == 2.0


def test_bad_figure_name_is_a_one_line_error(capsys):
    assert run.main(["--only", "mapping,nonsense"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nonsense" in err[0] and "fix:" in err[0]


def test_recorded_mapping_times_give_the_peers_ratios(tmp_path):
    """Group 1 reads LionHEART's and ODiMo's mapping times from the run's search.json and divides
    by MPS's; a peer missing from the run is named, not invented."""
    from benchmarks.common import Figure
    from benchmarks.mapping import recorded_mapping_times

    run_dir = tmp_path / "run"
    (run_dir / "search").mkdir(parents=True)
    methods = {"mps": {"mapping_seconds": 100.0, "search_seconds": 40.0, "adapt_seconds": 60.0, "hypervolume": 1.2},
               "lionheart": {"mapping_seconds": 580.0, "search_seconds": 580.0, "hypervolume": 1.1}}
    (run_dir / "search" / "search.json").write_text(json.dumps({"methods": methods}))
    fig = Figure("mapping", "t", "x")
    recorded_mapping_times(fig, Inputs(tiny_params(), True, run_dir, tmp_path, tmp_path, 1, 1))
    got = {r.measure: r for r in fig.rows}
    assert got["ratio lionheart / mps mapping time (recorded)"].value == pytest.approx(5.8)
    assert got["odimo: mapping time recorded by the search stage"].value == "n/a"
    assert "adapt 60 s + search 40 s" in got["mps: mapping time recorded by the search stage"].note
    empty = Figure("mapping", "t", "x")
    recorded_mapping_times(empty, Inputs(tiny_params(), True, tmp_path / "none", tmp_path, tmp_path, 1, 1))
    assert [r.value for r in empty.rows] == ["n/a"] and "fix" in empty.rows[0].note


def test_collapse_study_measures_what_the_evaluator_reports(tiny_data, tiny_pretrained):
    """The collapse study (benchmarks/analog_collapse.py) on the tiny model: its unrepaired
    accuracy at the first drift time is the shared evaluator's straight-conversion accuracy for
    the same seeds."""
    from benchmarks import analog_collapse
    from mps.evaluation import drift_accuracy_grid
    from mps.stages.common import eval_set, hardware_profile, load_splits
    from mps.stages.pretrain import load_pretrained
    from mps.supernet import realize
    from mps.supernet.convert import trace_layers

    params = tiny_params()
    rows = analog_collapse.study(params, tiny_data, tiny_pretrained, seeds=2, examples=200, times=[86400.0])
    model, ckpt = load_pretrained(tiny_pretrained)
    shape = tuple(ckpt["image_shape"])
    infos, _ = trace_layers(model, shape)
    model = realize(model, "analog", hardware_profile(params), shape)
    data = eval_set(load_splits(tiny_data), "test", 200, params.seed,
                    calib_batches=params.evaluate.bn_recalibration_batches, device="cpu")
    grid = drift_accuracy_grid(model, data, [86400.0], 2, params.seed)
    assert [r["all noisy"] for r in rows] == pytest.approx(list(grid[:, 0]))
    assert [r["seed"] for r in rows] == [params.seed, params.seed + 1]
    for r in rows:
        assert r["best single-layer repair"] in {n.removesuffix(".layer") for n in infos} | set(infos)
        assert 0.0 <= r["first layer, no DC"] <= 100.0 and 0.0 <= r["first layer, DC only"] <= 100.0


def test_mps_pick_study_measures_the_pick_as_the_evaluator_does(tiny_data, tiny_supernet, tiny_pretrained):
    """The MPS pick study (benchmarks/mps_pick_study.py) on the tiny supernet: one row per search
    seed, and each pick's test figure is the shared evaluator's for that mapping; each set's
    useful-range hypervolume is pymoo's on the points normalised by hand."""
    from pymoo.indicators.hv import HV

    from benchmarks import mps_pick_study
    from mps.stages.pretrain import load_pretrained
    from mps.cost_model import parse_hardware_profile
    from mps.evaluation import drift_accuracy_grid
    from mps.stages.common import eval_set, evaluation_options, load_splits
    from mps.supernet import extract, load_supernet

    params = tiny_params(**{"search.val_examples": 40, "search.alpha_steps": 10, "search.extraction_samples": 64,
                            "evaluate.max_test_examples": 100, "evaluate.repeats": 2})
    splits = load_splits(tiny_data)
    supernet, ckpt = load_supernet(tiny_supernet)
    fp32_model, _ = load_pretrained(tiny_pretrained)
    rows = mps_pick_study.study(params, splits, supernet, parse_hardware_profile(ckpt["profile"]), [6], [0, 1],
                                min_analog=0.0, log=lambda _line: None, fp32_model=fp32_model)
    window = params.report.hypervolume_window
    for r in rows:  # accuracy FP32 - window ... FP32 -> 1 ... 0, analog share 0 ... 1 -> 1 ... 0, reference 1.1
        z = np.array([[(r["fp32_val"] - a) / window, 1.0 - share] for a, share in r["selected"]])
        z = z[(z < 1.1).all(axis=1)]
        expected = float(HV(ref_point=np.array([1.1, 1.1])).do(z)) if len(z) else 0.0
        assert r["val_hv_useful"] == pytest.approx(expected, abs=2e-3)  # fp32_val rounded to 0.01
    # a mapping at FP32 accuracy with every MAC on analog tiles takes the whole box
    assert mps_pick_study.useful_hypervolume([(93.0, 1.0)], 93.0, 5.0) == pytest.approx(1.21)
    assert mps_pick_study.useful_hypervolume([(80.0, 1.0)], 93.0, 5.0) == 0.0
    assert [(r["budget"], r["seed"]) for r in rows] == [(6, 0), (6, 1)]
    ev = params.evaluate
    test = eval_set(splits, "test", ev.max_test_examples, params.seed, ev.batch_size,
                    calib_batches=ev.bn_recalibration_batches, device="cpu", **evaluation_options(params))
    for r in rows:
        assert 0 <= r["with_skip"] <= 6 and r["pick_val"] == max(a for a, _ in r["selected"])
        grid = drift_accuracy_grid(extract(supernet, r["pick"]), test, [86400.0, 31536000.0], 2, params.seed)
        assert r["pick_test_1d_mean_std_1y_mean_std"][0] == pytest.approx(round(float(grid[:, 0].mean()), 2))
        assert r["pick_test_1d_mean_std_1y_mean_std"][2] == pytest.approx(round(float(grid[:, 1].mean()), 2))
        # the untrimmed first front holds the reported set, so its pick is at least as good on validation
        assert r["pareto_size"] == params.search.pareto_size and r["front_size"] >= len(r["selected"])
        assert r["front_pick_val"] >= r["pick_val"] and r["front_val_hv_useful"] >= r["val_hv_useful"] - 1e-9
    # --pareto-size: the reported set shrinks to it; the row says which size it ran with
    (one,) = mps_pick_study.study(params, splits, supernet, parse_hardware_profile(ckpt["profile"]), [6], [0],
                                  min_analog=0.0, log=lambda _line: None, fp32_model=fp32_model, measure_test=False,
                                  pareto_size=1)
    assert one["pareto_size"] == 1 and len(one["selected"]) == 1 and one["front_size"] >= 1


def test_mps_pick_study_refuses_a_bad_size_before_any_work(capsys, tmp_path):
    """--pareto-size 0 and --anchors -1 stop at the command line, naming the flag and the fix,
    before the params or any run folder are read (neither exists here)."""
    from benchmarks import mps_pick_study

    for argv, flag in ((["--pareto-size", "0"], "--pareto-size 0"), (["--anchors", "-1"], "--anchors -1")):
        with pytest.raises(SystemExit) as exc:
            mps_pick_study.main([*argv, "--params", str(tmp_path / "missing.yaml")])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert flag in err and "fix:" in err


def test_ablation_pick_tables_pair_each_variant_with_the_default(tmp_path):
    """`mps_pick_study --ablation`'s tables: each variant's mean pick over its searches, and each
    variant minus the default adaptation paired by (adaptation seed, search seed); a missing
    ablation supernet stops the study before any search, naming the command that makes it."""
    from benchmarks import mps_pick_study
    from mps.artifacts import ArtifactError

    def row(variant, adapt, seed, day, year, share=0.8, hv=1.0):
        return {"ablation_variant": variant, "adaptation_seed": adapt, "seed": seed, "val_hv_useful": hv,
                "pick_analog": share, "pick_test_1d_mean_std_1y_mean_std": [day, 0.1, year, 0.1]}

    rows = [row("mps", 0, 0, 92.0, 91.0), row("mps", 0, 1, 92.4, 91.4), row("mps", 1, 0, 91.6, 90.6, share=1.0),
            row("qat", 0, 0, 91.0, 90.0), row("qat", 0, 1, 91.4, 90.4), row("qat", 1, 0, 91.6, 90.6, hv=0.7),
            {"ablation_variant": "qat", "adaptation_seed": 1, "seed": 1, "val_hv_useful": 0.5}]  # no pick
    md = mps_pick_study.ablation_tables(rows, {"qat": {"hwa": "none"}, "mps": {}})
    assert "| qat | 4 | 91.33 ± 0.18 | 90.33 ± 0.18 | 0 | 1 | 0.800 |" in md
    assert "| mps | 3 | 92.00 ± 0.23 | 91.00 ± 0.23 | 1 | 0 | 1.000 |" in md
    assert "Each variant minus `mps`" in md and "| qat | 3 | -0.667 ± 0.333 | -0.667 ± 0.333 | -0.100 ± 0.100 |" in md
    params = tiny_params()
    with pytest.raises(ArtifactError, match="snakemake ablation"):
        mps_pick_study.ablation_supernets(params, tmp_path / "no-run")


def test_mapping_times_are_remeasured_with_the_pipelines_own_commands(tiny_data, tiny_pretrained, tmp_path):
    """Group 1 re-runs `mps adapt` and `mps search` (LionHEART and ODiMo as its baselines) from the
    run's pretrained checkpoint and reads each method's mapping time from that search's record."""
    from benchmarks.common import Figure
    from benchmarks.mapping import remeasured_mapping_times

    import yaml

    # the tiny profile with less to score and one search per peer setting: the test is of the harness
    params = yaml.safe_load(TINY_PARAMS.read_text())
    params["adapt"].update({"evidence_examples": 50, "evidence_repeats": 1})
    params["search"].update({"budget": 4, "val_examples": 50, "baselines": ["fp32"]})
    params["search"]["lionheart"].update({"thresholds": [4.0]})
    params["search"]["odimo"].update({"lambdas": [0.0, 100.0]})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    inp = Inputs(tiny_params(), False, tmp_path / "no-run", tiny_data, tmp_path, 1, 1, params_path=path,
                 pretrained_path=tiny_pretrained)
    fig, logged = Figure("mapping", "t", "x"), []
    times = remeasured_mapping_times(fig, inp, log=logged.append)
    assert set(times) == {"mps", "lionheart", "odimo"} and all(s.n == 1 and s.median > 0 for s in times.values())
    got = {r.measure: r for r in fig.rows}
    for peer in ("lionheart", "odimo"):
        assert got[f"ratio {peer} / mps mapping time (re-measured)"].value == pytest.approx(
            times[peer].median / times["mps"].median)
    assert [m.split(": ")[-1] for m in logged] == ["mps adapt ...", "mps search ..."]
    # no params file to hand to the stages: one row says so, nothing runs
    missing = Figure("mapping", "t", "x")
    assert remeasured_mapping_times(missing, Inputs(tiny_params(), False, tmp_path, tiny_data, tmp_path, 1, 1)) == {}
    assert missing.rows[0].value == "n/a" and "fix" in missing.rows[0].note
