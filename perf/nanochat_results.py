"""Gather nanochat measurement files (written by perf/nanochat_seeds.py and the campaign
report) into benchmarks/nanochat/results.json, the headline numbers of RESULTS.md.

    python perf/nanochat_results.py --strong-60 A.json B.json ... [--weak-60 ...]
        [--strong-300 ...] [--campaign PACKED.tgz]
        [--transfer-seed S.json ... --transfer-champion C.json ...]
        [--out benchmarks/nanochat/results.json]

Each list pools the ok trials of its files (one seed each, or several). A file may also
be a campaign's archive, packed as `perf/nanochat_gpu.sh collect` packs it (a .tgz, with
the archive database or, from earlier versions, one JSON file per record): its seed
candidate's val trials are taken, the campaign's own baseline of the seed.

`--campaign` reads a packed campaign (or its archive folder) and writes what its report
says of it: wall-clock of its runs, GPU-minutes of trial time, candidates and trials, the
champion's val gain over the seed and its test-split confirmation. Where there is no
champion or no test result those numbers are null and `note` says why.

`--transfer-seed` and `--transfer-champion` pool perf/nanochat_seeds.py files of the seed
and of the champion (`--archive ... --candidate ...`) measured on one other device: the
gain, and a paired one-sided t-test over the seeds both ran.

The output is written whole, but a key whose options are not given keeps its value from
the existing `--out` file (null if it has none), so one measurement can be added at a time.
An option given with no files writes its key as null.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the archive's dependencies are loaded only where one is read
    from autolab.archive import Archive
    from autolab.records import CampaignRecord, Evaluation
    from benchmarks.protocol import MetricSpec

KEYS = ("strong_seed_60s", "weak_seed_60s", "strong_seed_300s", "campaign", "transfer")
DB = "archive/archive.db"


# -- packed archives ------------------------------------------------------------------------


def _packed_databases(tar: tarfile.TarFile) -> list[str]:
    return [n for n in tar.getnames() if n == DB or n.endswith("/" + DB)]


def _archive_roots(path: Path, into: Path) -> list[Path]:
    """The archive folders in `path`: those of a .tgz extracted under `into` (each database
    with its write-ahead log, if it was packed while open), or the folder itself."""
    if not path.name.endswith(".tgz"):
        folder = path / "archive" if (path / DB).is_file() else path
        return [folder] if (folder / "archive.db").is_file() else []
    with tarfile.open(path) as tar:
        dbs = _packed_databases(tar)
        for member in tar.getmembers():
            if member.name.startswith(tuple(dbs)):
                tar.extract(member, into, filter="data")
    return [into / Path(db).parent for db in dbs]


@contextlib.contextmanager
def open_packed_archives(path: Path) -> Iterator[list[Archive]]:
    """Every campaign archive in `path`, open for reading: a .tgz as `perf/nanochat_gpu.sh
    collect` or `snapshot` packs it (runs/<name>/archive/archive.db, one or several), or
    an archive folder. Each archive is named after its campaign's folder."""
    from autolab.archive import Archive

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        roots = _archive_roots(path, tmp)
        if not roots:
            raise SystemExit(f"no archive database in {path}")
        yield [stack.enter_context(Archive(root, create=False)) for root in roots]


@contextlib.contextmanager
def open_packed_archive(path: Path, name: str | None = None) -> Iterator[Archive]:
    """The one campaign archive in `path`, or the one of campaign `name`."""
    with open_packed_archives(path) as archives:
        found = [a for a in archives if name is None or a.name == name]
        names = ", ".join(a.name for a in archives)
        if not found:
            raise SystemExit(f"no campaign {name!r} in {path}; it holds: {names}")
        if len(found) > 1:
            raise SystemExit(f"{path} holds several campaigns ({names}): name one")
        yield found[0]


# -- seed measurements ----------------------------------------------------------------------


def read_measurement(path: Path) -> dict:
    """A perf/nanochat_seeds.py file, or the seed's val trials of a packed campaign."""
    if not path.name.endswith(".tgz"):
        return json.loads(path.read_text())
    with tarfile.open(path) as tar:
        packed = bool(_packed_databases(tar))
    meta, trials = _from_database(path) if packed else _from_files(path)
    setup = meta["fixed"]["setup"]
    trials.sort(key=lambda t: t["seed"])
    return {"device": setup["device"], "budget_s": setup["budget"]["amount"],
            "trials": [{"seed": t["seed"], "status": t["status"], "bpb": t["metrics"].get("bpb"),
                        **t["evidence"]} for t in trials]}


def _from_files(path: Path) -> tuple[dict, list[dict]]:
    """An archive in the file layout of earlier versions: one JSON file per record."""
    with tarfile.open(path) as tar:
        names = tar.getnames()

        def load(name: str) -> dict:
            return json.load(tar.extractfile(name))

        meta = load(next(n for n in names if n.endswith("/archive/campaign.json")))
        trials = [t for t in (load(n) for n in names if "/archive/trials/" in n
                              and n.endswith(".json"))
                  if t["candidate_id"] == meta["seed_candidate"] and t["split"] == "val"]
    return meta, trials


def _from_database(path: Path) -> tuple[dict, list[dict]]:
    """An archive database: the campaign record and its seed's val trials."""
    with open_packed_archive(path) as archive:
        meta = archive.campaign()
        trials = [t.model_dump(mode="json") for t in archive.trials_of(meta.seed_candidate)
                  if t.split == "val"]
    return meta.model_dump(mode="json"), trials


def pooled(paths: list[Path]) -> dict | None:
    return _pool([read_measurement(p) for p in paths], paths) if paths else None


def _pool(files: list[dict], paths: list[Path]) -> dict:
    """The ok trials of measurements read from `paths`, pooled."""
    devices = {f["device"] for f in files}
    if len(devices) != 1:
        raise SystemExit(f"files from different devices: {sorted(devices)}")
    trials = [t for f in files for t in f["trials"] if t["status"] == "ok"]
    bpb = [t["bpb"] for t in trials]
    return {
        "device": devices.pop(),
        "n": len(bpb),
        "seeds": [t["seed"] for t in trials],
        "val_bpb": [round(b, 4) for b in bpb],
        "val_bpb_mean": round(statistics.fmean(bpb), 4),
        "val_bpb_sd": round(statistics.stdev(bpb), 4) if len(bpb) > 1 else None,
        "tokens_per_s": round(statistics.fmean(t["tokens_per_s"] for t in trials)),
        "mfu": round(statistics.fmean(t["mfu"] for t in trials), 4),
        "peak_memory_gb": max(t["harness_peak_memory_gb"] for t in trials),
        "budget_s": files[0]["budget_s"],
        "sources": [str(p) for p in paths],
    }


def _sig(x: float | None) -> float | None:
    """Four significant digits, as the campaign report prints them."""
    return None if x is None or not math.isfinite(x) else float(f"{x:.4g}")


def _gain(delta: float | None, metric: MetricSpec) -> float | None:
    """A difference (value - reference) as a gain: positive when the value is better."""
    from benchmarks.protocol import Direction

    if delta is None:
        return None
    return -delta if metric.direction is Direction.MINIMIZE else delta


# -- the campaign ---------------------------------------------------------------------------


def campaign_result(path: Path) -> dict:
    """The campaign's headline numbers, as its report computes them."""
    from autolab.config import Params, PathParams
    from autolab.report import campaign_status
    from benchmarks import get_benchmark

    with open_packed_archive(path) as archive:
        record = archive.campaign()
        if record is None:
            raise SystemExit(f"no campaign record in {path}")
        metric = get_benchmark(record.benchmark).metric
        # the day's spend is read from this archive alone, not from the runs/ folder here
        params = Params(paths=PathParams(workdir=archive.root))
        status = campaign_status(archive, params, metric)
    return _campaign_numbers(record, status, metric) | {"sources": [str(path)]}


def _campaign_numbers(record: CampaignRecord, status: dict[str, Any],
                      metric: MetricSpec) -> dict:
    champion = status["champion"]
    crowned = champion != record.seed_candidate
    val = record.val if crowned and record.val and record.val.candidate_id == champion else None
    test = record.test if crowned and record.test and record.test.champion_id == champion \
        else None
    runs = status["usage"]
    out = {
        "device": record.fixed.get("setup", {}).get("device"),
        "minutes": round(sum(u.ended - u.started for u in runs) / 60, 1) if runs else None,
        "gpu_minutes": round(status["trial_minutes"], 1),
        "candidates": status["evaluated"],
        "trials": status["trials"],
        "champion": champion if crowned else None,
        # how often the test half was consulted (once per champion confirmed): each
        # look is another chance at a lucky test result, so the p-value is read with it
        "test_looks": status["test_looks"],
    }
    gain, p, n = _judged(val, metric)
    out |= {"val_gain": gain, "p_value": p, "val_n": n}
    gain, p, n = _judged(test.evaluation if test else None, metric)
    out |= {"test_gain": gain, "test_p_value": p, "test_n": n}
    notes = ["no run's usage recorded: minutes unknown"] if not runs else []
    if not crowned:
        notes.append("no candidate beat the seed: no champion")
    elif val is None:
        notes.append("the campaign record holds no val comparison of its champion")
    if crowned and test is None:
        notes.append("the champion has no test-split result")
    return out | ({"note": "; ".join(notes)} if notes else {})


def _judged(e: Evaluation | None,
            metric: MetricSpec) -> tuple[float | None, float | None, int | None]:
    """An evaluation's gain over its reference, p-value and seed count."""
    if e is None:
        return None, None, None
    return _sig(_gain(e.delta, metric)), _sig(e.p_value), len(e.values)


# -- transfer to another device -------------------------------------------------------------


def _ok_by_seed(files: list[dict], paths: list[Path]) -> dict[int, float]:
    """bpb of every ok trial of the files, by seed; a seed measured twice is refused."""
    out: dict[int, float] = {}
    for path, f in zip(paths, files, strict=True):
        for t in f["trials"]:
            if t["status"] != "ok":
                continue
            if t["seed"] in out:
                raise SystemExit(f"seed {t['seed']} measured twice (again in {path})")
            out[t["seed"]] = t["bpb"]
    return out


def _recorded_candidate(files: list[dict], paths: list[Path]) -> str | None:
    found = {f.get("candidate") for p, f in zip(paths, files, strict=True)
             if not p.name.endswith(".tgz")}
    if len(found) > 1:
        raise SystemExit(f"champion files of different candidates: {sorted(map(str, found))}")
    return found.pop() if found else None


def transfer_result(seed_files: list[Path], champion_files: list[Path]) -> dict | None:
    """Seed and champion measured on one device: means, gain, and the paired test."""
    from autolab.stats import paired_p
    from benchmarks import get_benchmark

    if not seed_files and not champion_files:
        return None
    if not seed_files or not champion_files:
        raise SystemExit("a transfer needs both --transfer-seed and --transfer-champion files")
    seed_read = [read_measurement(p) for p in seed_files]
    champ_read = [read_measurement(p) for p in champion_files]
    seed, champ = _pool(seed_read, seed_files), _pool(champ_read, champion_files)
    if seed["device"] != champ["device"]:
        devices = sorted({seed["device"], champ["device"]})
        raise SystemExit(f"seed and champion files from different devices: {devices}")
    metric = get_benchmark("nanochat").metric
    a, b = _ok_by_seed(champ_read, champion_files), _ok_by_seed(seed_read, seed_files)
    shared = sorted(a.keys() & b.keys())
    p = paired_p([a[s] for s in shared], [b[s] for s in shared], metric)
    delta = statistics.fmean(a.values()) - statistics.fmean(b.values())
    return {
        "device": seed["device"],
        "seed_val_bpb_mean": seed["val_bpb_mean"],
        "champion_val_bpb_mean": champ["val_bpb_mean"],
        "seed_n": seed["n"],
        "champion_n": champ["n"],
        "gain": _sig(_gain(delta, metric)),
        "p_value": _sig(p),
        "paired_n": len(shared),
        "champion": _recorded_candidate(champ_read, champion_files),
        "sources": seed["sources"] + champ["sources"],
    }


# -- results.json ---------------------------------------------------------------------------


def _strong_300(paths: list[Path]) -> dict | None:
    s300 = pooled(paths)
    return None if s300 is None else {
        "device": s300["device"], "val_bpb": s300["val_bpb_mean"], "n": s300["n"],
        "sources": s300["sources"]}


def measured(a: argparse.Namespace) -> dict:
    """The keys whose options were given, each computed from its files."""
    out: dict[str, Any] = {}
    if a.strong_60 is not None:
        out["strong_seed_60s"] = pooled(a.strong_60)
    if a.weak_60 is not None:
        out["weak_seed_60s"] = pooled(a.weak_60)
    if a.strong_300 is not None:
        out["strong_seed_300s"] = _strong_300(a.strong_300)
    if a.campaign is not None:
        out["campaign"] = campaign_result(a.campaign)
    if a.transfer_seed is not None or a.transfer_champion is not None:
        out["transfer"] = transfer_result(a.transfer_seed or [], a.transfer_champion or [])
    return out


def merged(old: dict, new: dict) -> dict:
    """Every key of results.json: the new value where measured, else the existing one."""
    return {k: new[k] if k in new else old.get(k) for k in KEYS}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for key in ("strong-60", "weak-60", "strong-300", "transfer-seed", "transfer-champion"):
        ap.add_argument(f"--{key}", nargs="*", type=Path, default=None)
    ap.add_argument("--campaign", type=Path, default=None,
                    help="a packed campaign (.tgz) or its archive folder")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/nanochat/results.json"))
    a = ap.parse_args(argv)
    old = json.loads(a.out.read_text()) if a.out.is_file() else {}
    out = merged(old, measured(a))
    a.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
