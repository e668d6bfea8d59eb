from pathlib import Path

import pytest

from autolab.config import ParamsError, load_params

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_shipped_params_are_valid():
    params = load_params(ROOT / "params.yaml")
    assert params.campaign.benchmark == "tinylm"
    assert params.evaluation.alpha == 0.01


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
