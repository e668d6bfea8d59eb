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
