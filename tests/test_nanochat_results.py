"""The nanochat results script (perf/nanochat_results.py) and the archived-candidate choice
of perf/nanochat_seeds.py, on the CPU: a campaign's numbers from its packed archive (a small
one built here, and the committed H200 campaign checked against its own report), the
transfer's paired test, refusals, and keys kept from an existing results file."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import statistics
import sys
import tarfile
from pathlib import Path

import pytest
from scipy import stats

from autolab.archive import Archive
from autolab.engine import Usage
from autolab.records import CampaignRecord, Decision, Evaluation, Trial, content_key
from autolab.records import TestResult as Confirmation
from autolab.workspace import file_hashes, make_candidate

ROOT = Path(__file__).resolve().parents[1]
LEARNED = ROOT / "benchmarks" / "nanochat" / "measurements" / "2026-11-24-h200-learned"
SETUP = {"device": "Test GPU / Test CPU", "budget": {"amount": 60}}
SEED_FILES = {"train.py": "DEPTH = 2\nWIDTH = 8\n"}
CHAMP_FILES = {"train.py": "DEPTH = 4\nWIDTH = 8\n"}
LOSER_FILES = {"train.py": "DEPTH = 1\nWIDTH = 8\n"}


def _load(name: str):
    """A perf script as a module, under its own name (nanochat_seeds imports
    nanochat_results by that name, as it does when run from perf/)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "perf" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def results():
    return _load("nanochat_results")


@pytest.fixture(scope="module")
def seeds(results):
    return _load("nanochat_seeds")


# -- a small campaign -----------------------------------------------------------------------


def _trial(cid: str, seed: int, bpb: float, wall_s: float, split: str = "val",
           setup: dict = SETUP) -> Trial:
    key = content_key("setup", setup)
    return Trial(id=Trial.key(cid, seed, split, key), candidate_id=cid, seed=seed, split=split,
                 setup_key=key, status="ok", metrics={"bpb": bpb}, wall_s=wall_s)


def _evaluation(cid: str, ref: str, values: list[float], reference: list[float], p: float,
                split: str) -> Evaluation:
    mean, ref_mean = statistics.fmean(values), statistics.fmean(reference)
    return Evaluation(id=content_key("ev", cid, split), candidate_id=cid, reference_id=ref,
                      metric="bpb", values=values, reference_values=reference, mean=mean,
                      reference_mean=ref_mean, delta=mean - ref_mean, p_value=p,
                      test="paired", alpha=0.01, split=split, decision="accept")


def build_campaign(root: Path, name: str = "camp", crowned: bool = True) -> dict:
    """An archive under root/runs/<name>/archive; returns what went in."""
    cands = {k: make_candidate("nanochat", f, [], None) for k, f in
             (("seed", SEED_FILES), ("champ", CHAMP_FILES), ("loser", LOSER_FILES))}
    seed, champ, loser = (cands[k].id for k in ("seed", "champ", "loser"))
    trials = [*(_trial(seed, s, b, 60.5) for s, b in ((1, 1.20), (2, 1.21), (3, 1.23))),
              *(_trial(champ, s, b, 61.0) for s, b in ((1, 1.18), (2, 1.2), (3, 1.2))),
              _trial(loser, 1, 1.25, 30.0),
              *(_trial(c, 9, b, 50.0, "test") for c, b in ((seed, 1.3), (champ, 1.28)))]
    elsewhere = _trial(loser, 2, 1.1, 999.0, setup={"device": "another", "budget": {}})
    val = _evaluation(champ, seed, [1.18, 1.2, 1.2], [1.20, 1.21, 1.23], 0.0123456, "val")
    test = _evaluation(champ, seed, [1.28, 1.27], [1.3, 1.31], 0.04321, "test")
    decisions = [
        Decision(id="d1", campaign=name, thread=0, proposal_id="p1", candidate_id=champ,
                 outcome="accepted", reason="", champion=crowned, evaluation_id=val.id),
        Decision(id="d2", campaign=name, thread=0, proposal_id="p2", candidate_id=loser,
                 outcome="rejected", reason=""),
        Decision(id="d3", campaign=name, thread=0, proposal_id="p3", candidate_id=None,
                 outcome="refused", reason=""),
    ]
    runs = [Usage(started=1000.0, ended=1600.0, interval_s=0.2),
            Usage(started=5000.0, ended=5300.0, interval_s=0.2)]
    record = CampaignRecord(
        name=name, benchmark="nanochat", params_hash="h", fixed={"setup": SETUP},
        seed_candidate=seed, status="finished", val=val if crowned else None,
        test=Confirmation(champion_id=champ, seed_id=seed, seeds=[9], evaluation=test)
        if crowned else None)
    with Archive(root / "runs" / name / "archive") as archive:
        for key, files in (("seed", SEED_FILES), ("champ", CHAMP_FILES), ("loser", LOSER_FILES)):
            archive.put_candidate(cands[key], files)
        archive.put_many([*trials, elsewhere, *decisions])
        for i, usage in enumerate(runs):
            archive.put_text(f"usage/run{i}.json", usage.model_dump_json())
        archive.put_campaign(record)
    return {"ids": (seed, champ, loser), "trials": trials, "runs": runs, "val": val,
            "test": test, "root": root / "runs" / name / "archive"}


def pack(root: Path, out: Path) -> Path:
    with tarfile.open(out, "w:gz") as tar:
        tar.add(root / "runs", arcname="runs")
    return out


@pytest.fixture
def campaign(tmp_path):
    built = build_campaign(tmp_path / "a")
    return built | {"tgz": pack(tmp_path / "a", tmp_path / "campaign-camp.tgz")}


def test_campaign_numbers_from_the_archive(results, campaign):
    got = results.campaign_result(campaign["tgz"])
    _, champ, _ = campaign["ids"]
    val, test = campaign["val"], campaign["test"]
    # only trials of the campaign's own setup count (not the one measured elsewhere)
    assert got["gpu_minutes"] == round(sum(t.wall_s for t in campaign["trials"]) / 60, 1)
    assert got["trials"] == len(campaign["trials"]) == 9
    assert got["minutes"] == round((600 + 300) / 60, 1)
    assert got["candidates"] == 2  # the champion and the loser; the refused ran nothing
    assert got["champion"] == champ and got["device"] == SETUP["device"]
    assert got["val_gain"] == pytest.approx(val.reference_mean - val.mean, rel=1e-3)
    assert got["val_gain"] > 0 and got["p_value"] == pytest.approx(0.0123456, rel=1e-3)
    assert got["test_gain"] == pytest.approx(test.reference_mean - test.mean, rel=1e-3)
    assert got["test_gain"] == pytest.approx(1.305 - 1.275, rel=1e-3)
    assert (got["test_p_value"], got["val_n"], got["test_n"]) == (0.04321, 3, 2)
    assert "note" not in got and got["sources"] == [str(campaign["tgz"])]
    folder = results.campaign_result(campaign["root"])  # the archive folder itself
    assert folder | {"sources": None} == got | {"sources": None}


def test_campaign_without_a_champion_says_so(results, tmp_path):
    build_campaign(tmp_path, crowned=False)
    got = results.campaign_result(pack(tmp_path, tmp_path / "c.tgz"))
    assert got["champion"] is None and got["val_gain"] is None and got["test_gain"] is None
    assert got["p_value"] is None and got["test_n"] is None
    assert "no champion" in got["note"] and got["trials"] == 9


def test_committed_campaign_agrees_with_its_report(results):
    got = results.campaign_result(LEARNED / "campaign-nanochat-60s-learned.tgz")
    report = (LEARNED / "report.md").read_text()
    trials, minutes = re.search(r"Trials: (\d+), ([\d.]+) GPU-minutes", report).groups()
    assert (got["trials"], got["gpu_minutes"]) == (int(trials), float(minutes))
    counts = re.search(r"\|---\|.*\n\| (\d+) \| (\d+) \|", report).groups()
    assert got["candidates"] == int(counts[1])
    assert got["champion"].startswith(re.search(r"\*\*Champion `(\w+)`", report)[1])
    val = re.search(r"Val gain over the seed: \*\*([\d.]+) .*?p = ([\d.]+).*?on (\d+) val",
                    report).groups()
    assert (got["val_gain"], got["p_value"], got["val_n"]) == (float(val[0]), float(val[1]),
                                                              int(val[2]))
    test = re.search(r"Test-split gain: \*\*([\d.]+) .*?p = ([\d.]+).*?over (\d+) seeds",
                     report).groups()
    assert (got["test_gain"], got["test_p_value"], got["test_n"]) == (
        float(test[0]), float(test[1]), int(test[2]))
    looks = re.search(r"test split has been looked at (\d+) time", report)[1]
    assert got["test_looks"] == int(looks)
    run_s = [float(s) for s in re.findall(r"Run \d+: .* over (\d+) s", report)]
    assert got["minutes"] == pytest.approx(sum(run_s) / 60, abs=0.1)
    assert got["device"] == results.read_measurement(
        LEARNED / "campaign-nanochat-60s-learned.tgz")["device"]


# -- transfer -------------------------------------------------------------------------------


def test_committed_transfer_agrees_with_its_measurements(results):
    """results.json's transfer is what the committed H100 files give, and it is the
    campaign's champion that was re-measured."""
    folder = ROOT / "benchmarks" / "nanochat" / "measurements" / "2026-11-24-h100-transfer"
    got = results.transfer_result([folder / "transfer-seed-h100.json"],
                                  [folder / "transfer-champion-h100.json"])
    committed = json.loads((ROOT / "benchmarks" / "nanochat" / "results.json").read_text())
    sources = got.pop("sources")
    assert {k: v for k, v in committed["transfer"].items() if k != "sources"} == got
    assert committed["transfer"]["sources"] == [str(Path(p).relative_to(ROOT)) for p in sources]
    assert got["champion"] == committed["campaign"]["champion"]
    assert "H100" in got["device"] and "H100" not in committed["campaign"]["device"]



def write_seeds(path: Path, device: str, bpb: dict[int, float | None],
                candidate: str | None = None) -> Path:
    """A perf/nanochat_seeds.py output: one trial per seed (None: a failed one)."""
    trials = [{"seed": s, "status": "ok" if b is not None else "failed", "bpb": b,
               "tokens_per_s": 1000, "mfu": 0.2, "harness_peak_memory_gb": 10.0}
              for s, b in bpb.items()]
    path.write_text(json.dumps({"device": device, "budget_s": 60, "candidate": candidate,
                                "trials": trials}))
    return path


def test_transfer_pairs_the_shared_seeds(results, tmp_path):
    seed = write_seeds(tmp_path / "s.json", "H100", {1: 1.20, 2: 1.22, 3: 1.21, 4: 1.25})
    champ = [write_seeds(tmp_path / "c1.json", "H100", {1: 1.19, 2: 1.20}, "abc"),
             write_seeds(tmp_path / "c2.json", "H100", {3: 1.205, 5: None}, "abc")]
    got = results.transfer_result([seed], champ)
    expected = stats.ttest_rel([1.19, 1.20, 1.205], [1.20, 1.22, 1.21], alternative="less")
    assert got["p_value"] == pytest.approx(expected.pvalue, rel=1e-3)
    assert got["gain"] == pytest.approx(statistics.fmean([1.20, 1.22, 1.21, 1.25])
                                        - statistics.fmean([1.19, 1.20, 1.205]), rel=1e-3)
    assert (got["seed_n"], got["champion_n"], got["paired_n"]) == (4, 3, 3)
    assert got["champion"] == "abc" and got["device"] == "H100"
    assert got["seed_val_bpb_mean"] == 1.22 and got["champion_val_bpb_mean"] == 1.1983
    one = results.transfer_result([seed], [champ[1]])  # one shared seed: no test
    assert one["p_value"] is None and one["paired_n"] == 1


def test_transfer_refuses_mixed_devices(results, tmp_path):
    seed = write_seeds(tmp_path / "s.json", "H100", {1: 1.2, 2: 1.21})
    champ = write_seeds(tmp_path / "c.json", "H200", {1: 1.19, 2: 1.2})
    with pytest.raises(SystemExit, match="different devices"):
        results.transfer_result([seed], [champ])
    with pytest.raises(SystemExit, match="different devices"):
        results.transfer_result([seed, champ], [champ])
    with pytest.raises(SystemExit, match="needs both"):
        results.transfer_result([seed], [])


def test_keys_not_given_are_kept(results, tmp_path):
    out = tmp_path / "results.json"
    out.write_text(json.dumps({"strong_seed_60s": {"kept": 1}, "weak_seed_60s": {"kept": 2},
                               "campaign": {"kept": 3}}))
    seed = write_seeds(tmp_path / "s.json", "H100", {1: 1.20, 2: 1.22})
    champ = write_seeds(tmp_path / "c.json", "H100", {1: 1.19, 2: 1.20}, "abc")
    results.main(["--transfer-seed", str(seed), "--transfer-champion", str(champ),
                  "--weak-60", "--out", str(out)])
    got = json.loads(out.read_text())
    assert list(got) == list(results.KEYS)
    assert got["strong_seed_60s"] == {"kept": 1} and got["campaign"] == {"kept": 3}
    assert got["weak_seed_60s"] is None  # given with no files: not measured
    assert got["strong_seed_300s"] is None and got["transfer"]["champion"] == "abc"


# -- an archived candidate for perf/nanochat_seeds.py ---------------------------------------


def test_archived_candidate_by_prefix(seeds, campaign, tmp_path):
    build_campaign(tmp_path / "a", name="other")  # a second campaign in the same packed file
    tgz = pack(tmp_path / "a", tmp_path / "two.tgz")
    _, champ, _ = campaign["ids"]
    record, files = seeds.archived_candidate(tgz, champ[:6], "camp")
    assert record.id == champ and files == CHAMP_FILES
    assert make_candidate("nanochat", files, [], None).id == champ
    assert file_hashes(files) == record.files
    args = argparse.Namespace(archive=campaign["tgz"], candidate=champ[:8], campaign_name=None,
                              variant="strong", set=["WIDTH=16"])
    record, files = seeds.trial_files(args, seeds.get_benchmark("nanochat"))
    assert record.id == champ and files["train.py"] == "DEPTH = 4\nWIDTH = 16\n"


def test_archived_candidate_unknown_or_ambiguous(seeds, campaign, tmp_path):
    ids = campaign["ids"]
    with pytest.raises(SystemExit, match="matches no candidate") as err:
        seeds.archived_candidate(campaign["tgz"], "zz")
    assert all(cid[:12] in str(err.value) for cid in ids)
    with pytest.raises(SystemExit, match="is ambiguous"):
        seeds.archived_candidate(campaign["tgz"], "")
    with pytest.raises(SystemExit, match="no campaign 'nope'"):
        seeds.archived_candidate(campaign["tgz"], ids[0][:6], "nope")
