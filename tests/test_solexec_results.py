"""perf/solexec_results.py: results.json's `campaign` from a joint campaign's family summary."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perf.solexec_results import main  # noqa: E402


def _member(name, cat, seed=None, champion=None, test=None, test_seed=None, accepted=(),
            error=None):
    return {"member": name, "campaign": f"c--{name}", "relations": [f"category:{cat}",
                                                                    f"signature:{cat}|x"],
            "seed": seed, "champion": champion, "champion_id": None, "test": test,
            "test_seed": test_seed, "proposals": 2, "accepted": list(accepted), "error": error}


def test_the_campaign_key_counts_only_members_judged_and_keeps_other_keys(tmp_path):
    family = {"family": "solexec", "campaign": "c", "metric": "sol_score", "transfers": [
        {"technique": "compile_default", "source": "a", "target": "b", "outcome": "rejected"}],
              "members": [
                  _member("a", "elementwise", 0.3, 0.5, test=0.45, test_seed=0.31,
                          accepted=["compile_default"]),
                  _member("b", "elementwise", 0.5, 0.5),
                  _member("c", "norm", 0.4, 0.7),
                  _member("d", "norm"),  # not reached yet
                  _member("e", "gemm", error="RuntimeError: no T_b"),
              ]}
    (tmp_path / "family.json").write_text(json.dumps(family))
    out = tmp_path / "results.json"
    out.write_text(json.dumps({"baseline": {"problems": 18}}))
    main(["--family", str(tmp_path / "family.json"), "--device", "GPU X", "--out", str(out)])
    got = json.loads(out.read_text())
    assert got["baseline"] == {"problems": 18}  # kept
    c = got["campaign"]
    assert (c["problems"], c["problems_planned"], c["failed"]) == (3, 5, ["e"])
    assert c["mean_sol_before"] == round((0.3 + 0.5 + 0.4) / 3, 4)
    assert c["mean_sol_after"] == round((0.5 + 0.5 + 0.7) / 3, 4)
    assert c["by_category"] == {"elementwise": 0.5, "norm": 0.7}
    assert (c["problems_confirmed_on_test"], c["mean_sol_after_test"],
            c["mean_sol_seed_test"]) == (1, 0.45, 0.31)
    assert c["accepted"] == {"a": ["compile_default"]}
    assert c["transfers"] == ["compile_default: a -> b (rejected)"]


def _tk_run(path: Path, member: str, trials: list[tuple[str, float, float | None]]) -> Path:
    """A perf/solexec_trial.py output: (technique, smallest T_k/T_SOL, ncu/T_SOL) a trial."""
    run = {"member": member, "techniques": sorted({t for t, _, _ in trials}),
           "device": "NVIDIA H100 80GB HBM3 / a CPU",
           "profiled_workload": {"uuid": "u", "axes": {"N": 8}, "t_sol_ns": 2500.0},
           "trials": [{"technique": t, "status": "ok", "ncu_over_tsol": ncu,
                       "metrics": {"sol_score": 0.5},
                       "evidence": {"min_tk_over_tsol": tk, "median_time_us": 10.0}}
                      for t, tk, ncu in trials] + [
               {"technique": trials[0][0], "status": "failed", "ncu_over_tsol": 0.01,
                "metrics": {}, "evidence": {"min_tk_over_tsol": 0.01}}]}
    path.write_text(json.dumps(run))
    return path


def test_tk_table_takes_each_technique_s_smallest_ratios_and_flags_any_below_tsol(tmp_path):
    from perf.solexec_tk import main as tk_main

    a = _tk_run(tmp_path / "a.json", "L1-001_x", [("reference", 9.0, 8.5), ("triton_rows", 1.3,
                                                                            None),
                                                  ("triton_rows", 1.2, 1.05)])
    b = _tk_run(tmp_path / "b.json", "L1-002_y", [("cuda_graph", 0.8, 0.95),
                                                  ("nothing_launched", 1.5, 0.0)])
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"baseline": {"problems": 1}}))
    assert tk_main([str(a), str(b), "--update", str(results)]) == 0
    out = json.loads(results.read_text())
    assert out["baseline"] == {"problems": 1}  # the other keys stay
    found = {(k["member"], k["technique"]): k for k in out["fastest_kernels"]["kernels"]}
    assert found[("L1-001_x", "triton_rows")]["min_tk_over_tsol"] == 1.2
    assert found[("L1-001_x", "triton_rows")]["ncu_over_tsol"] == 1.05
    assert found[("L1-001_x", "reference")]["trials"] == 2 - 1  # the failed trial not counted
    assert out["fastest_kernels"]["min_ncu_over_tsol"] == 0.0  # no kernel at all: flagged
    assert out["fastest_kernels"]["below_tsol"] == ["L1-002_y/cuda_graph",
                                                    "L1-002_y/nothing_launched"]
    assert out["fastest_kernels"]["device"] == ["NVIDIA H100 80GB HBM3"]
