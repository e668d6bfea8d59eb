from pathlib import Path

import pytest

from autolab.config import Params, ParamsError, fixed_changes, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_shipped_params_are_valid():
    params = load_params(ROOT / "params.yaml")
    assert params.campaign.benchmark == "tinylm"
    assert params.evaluation.alpha == 0.01


@pytest.mark.parametrize("path", sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "benchmarks").glob("*/params*.yaml")))
def test_the_benchmarks_params_files_are_valid(path):
    params = load_params(ROOT / path)
    assert params.campaign.benchmark.split("-")[0] in path


def test_wrong_type_names_the_key(tmp_path):
    with pytest.raises(ParamsError) as err:
        load_params(write(tmp_path, "campaign:\n  threads: many\n"))
    assert "campaign.threads" in str(err.value)
    assert "'many'" in str(err.value)


def test_out_of_range_names_the_key_and_the_bound(tmp_path):
    with pytest.raises(ParamsError) as err:
        load_params(write(tmp_path, "evaluation:\n  alpha: 1.5\n"))
    assert "evaluation.alpha" in str(err.value)
    assert "less than 0.5" in str(err.value)


def test_unknown_key_is_refused(tmp_path):
    with pytest.raises(ParamsError) as err:
        load_params(write(tmp_path, "evaluation:\n  alpah: 0.05\n"))
    assert "evaluation.alpah" in str(err.value) and "unknown key" in str(err.value)


def test_cross_field_rule(tmp_path):
    with pytest.raises(ParamsError) as err:
        load_params(write(tmp_path, "evaluation:\n  min_seeds: 5\n  max_seeds: 3\n"))
    assert "evaluation" in str(err.value) and "max_seeds" in str(err.value)


def test_broken_yaml_and_missing_file(tmp_path):
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(write(tmp_path, "campaign: [unclosed\n"))
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def test_overrides_merge_on_top(tmp_path):
    params = load_params(write(tmp_path, "campaign:\n  threads: 3\n"), {"campaign": {"name": "x"}})
    assert params.campaign.threads == 3 and params.campaign.name == "x"


def test_cli_reports_invalid_params_before_running(tmp_path):
    from typer.testing import CliRunner

    from autolab.cli import app

    bad = write(tmp_path, "campaign:\n  max_proposals: -1\n")
    result = CliRunner().invoke(app, ["run", "--params", str(bad)])
    assert result.exit_code == 2
    assert "campaign.max_proposals" in result.output
    assert not (tmp_path / "runs").exists()


def test_unknown_benchmark_names_the_key_and_the_choices(tmp_path):
    with pytest.raises(ParamsError) as err:
        load_params(write(tmp_path, "campaign:\n  benchmark: tinylmm\n"))
    text = str(err.value)
    assert "1 invalid setting" in text
    (line,) = [ln for ln in text.splitlines() if "campaign.benchmark" in ln]
    assert "unknown benchmark 'tinylmm'" in line and "tinylm" in line and "noop" in line


def test_min_seeds_above_max_seeds_is_refused():
    with pytest.raises(ParamsError, match="max_seeds"):
        parse_params({"evaluation": {"min_seeds": 6, "max_seeds": 4}})
    assert parse_params({"evaluation": {"min_seeds": 4, "max_seeds": 4}}).evaluation.max_seeds == 4


@pytest.mark.parametrize(("section", "key", "value"), [
    ("sandbox", "isolation", "fast"), ("audit", "replication_alpha", 0.5),
    ("audit", "replication_seeds", 1), ("proposer", "kind", "llm"),
])
def test_new_sections_are_validated(section, key, value):
    with pytest.raises(ParamsError) as err:
        parse_params({section: {key: value}})
    assert f"{section}.{key}" in str(err.value)


def test_fixed_settings_and_what_changed():
    base = Params()
    fixed = base.fixed()
    assert {"campaign.benchmark", "campaign.seed_variant", "evaluation.alpha",
            "evaluation.max_seeds", "budget.amount", "audit.replication_alpha",
            "sandbox.isolation"} <= set(fixed)
    assert not any(k.startswith(("proposer.", "paths.", "tracking.")) for k in fixed)
    assert "campaign.max_proposals" not in fixed and "sandbox.allow_unisolated" not in fixed
    assert fixed_changes(fixed, base.fixed()) == []
    other = parse_params({"evaluation": {"alpha": 0.05}, "sandbox": {"isolation": "bwrap"},
                          "campaign": {"max_proposals": 99}, "proposer": {"kind": "offline"}})
    assert fixed_changes(fixed, other.fixed()) == [
        "evaluation.alpha: 0.01 -> 0.05", "sandbox.isolation: 'auto' -> 'bwrap'"]
    assert fixed_changes({"budget.amount": None}, {}) == []
    assert fixed_changes({}, {"audit.new": 1}) == ["audit.new: None -> 1"]


def test_shipped_params_have_the_new_sections():
    params = load_params(ROOT / "params.yaml")
    assert params.sandbox.isolation in ("auto", "bwrap", "unshare", "none")
    assert params.audit.replication_seeds >= 2


def test_static_scan_off_only_with_a_proposer_whose_code_is_known():
    with pytest.raises(ParamsError) as err:
        parse_params({"audit": {"static_scan": False}})  # proposer.kind auto: maybe an LLM
    assert "audit.static_scan" in str(err.value) and "proposer.kind" in str(err.value)
    p = parse_params({"audit": {"static_scan": False}, "proposer": {"kind": "offline"}})
    assert p.fixed()["audit.static_scan"] is False  # recorded with the campaign for life
