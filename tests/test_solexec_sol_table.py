"""The T_SOL table script (perf/solexec_sol_table.py) on the fixture problems."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "solexec"


@pytest.fixture(scope="module")
def table_script():
    spec = importlib.util.spec_from_file_location(
        "solexec_sol_table", ROOT / "perf" / "solexec_sol_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rows(table_script, tmp_path_factory):
    out = tmp_path_factory.mktemp("table") / "sol.json"
    table_script.main(["--data-dir", str(FIXTURES), "--out", str(out), "--jobs", "1"])
    return {(r["subset"], r["problem"], r["workload"]): r for r in json.loads(out.read_text())}


def test_every_workload_has_a_row_with_an_estimate_or_a_reason(rows):
    assert len(rows) == 10
    statuses = {key: r["status"] for key, r in rows.items()}
    assert list(statuses.values()).count("estimated") == 8
    blob = rows[("FlashInfer-Bench", "001_gather_rows_from_blob", "gather-blob")]
    assert blob["status"] == "skipped" and "safetensors" in blob["reason"]
    zeros = rows[("L2", "001_scaled_add_with_scalars", "add-zeros")]
    assert zeros["status"] == "skipped" and "'zeros'" in zeros["reason"]
    assert all(r["category"] for r in rows.values())


def test_matmul_row_counts_and_prices_on_every_device(rows):
    row = rows[("L1", "001_small_matmul", "mm-4096")]
    m, n, k = 4096, 8, 16  # A is M x K, B is N x K: C = A @ B.T, float32
    assert row["flops"] == {"tensor_core:float32": 2 * m * n * k, "cuda_core": 0}
    assert (row["input_bytes"], row["output_bytes"]) == ((m * k + n * k) * 4, m * n * 4)
    assert (row["precision"], row["rate_class"]) == ("fp32", "fp16")
    assert set(row["t_sol_s"]) == set(row["bound"]) == {"h100", "h200", "b200"}
    assert row["t_sol_s"]["b200"] == pytest.approx(row["input_bytes"] / 7.7e12 + m * n * 4 / 7.7e12)
    assert row["t_sol_s"]["h100"] > row["t_sol_s"]["h200"] > row["t_sol_s"]["b200"]


def test_value_reading_references_fall_back_to_the_cpu(rows):
    row = rows[("L2", "001_scaled_add_with_scalars", "add-16")]
    assert row["status"] == "estimated" and row["traced_on"] == "cpu"
    assert row["meta_failure"].startswith("data-dependent op on meta tensors")


def test_filters_and_summary(table_script, capsys):
    problems = table_script.select(FIXTURES, ["L1"], ["matmul"])
    assert [p.key for p in problems] == ["L1/001_small_matmul"]
    assert table_script.select(FIXTURES, None, ["attention", "gather"])[1].subset == (
        "FlashInfer-Bench"
    )
    rows = table_script.table(problems, jobs=1)
    text = table_script.summary(rows, seconds=1.0)
    assert text.startswith("2 workloads of 1 problems")
    assert "estimated  2 (1 problems)" in text


def test_a_workload_over_its_time_is_a_failure_not_a_hang(table_script, monkeypatch):
    def spin(problem, workload, meta_failure=None):
        while True:  # CPU time, which the limit counts
            pass

    monkeypatch.setattr(table_script, "count_workload", spin)
    problems = table_script.select(FIXTURES, ["L1"], ["matmul"])
    rows = table_script.table(problems, jobs=1, timeout=0.2)
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert rows[0]["reason"] == "ran past 0.2 CPU seconds"
