"""A seed solution of nanochat on several seeds through the real trial runner (sandbox,
harness, trusted server and scorer), one trial at a time; writes every trial's numbers.

    python perf/nanochat_seeds.py --variant strong --seeds 3 --budget 60 --out OUT.json
        [--benchmark nanochat] [--prepared artifacts/nanochat/data] [--isolation auto]
        [--archive PACKED.tgz --candidate ID [--campaign-name NAME]]

The JSON holds the setup (device, isolation, budget), each trial's record (val bpb, tokens
per second, MFU, peak memory, steps, tokens) and their mean and sd; perf/nanochat_results.py
gathers such files into benchmarks/nanochat/results.json.

`--archive` with `--candidate` (an id or a unique prefix) runs an archived candidate's
files instead of a seed variant: a campaign's champion or seed, measured again on another
device. The archive is a packed campaign (as `perf/nanochat_gpu.sh collect` or `snapshot`
packs it; of the campaigns in it, the one that holds the candidate, or `--campaign-name`)
or an archive folder. Reading it needs the archive's own dependencies (SQLAlchemy,
Alembic): the .venv that `perf/nanochat_gpu.sh install` makes.
"""

from __future__ import annotations

import argparse
import ast
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from autolab.records import Candidate, content_key
from autolab.runner import run_trial, trial_setup
from autolab.sandbox import isolation_mode
from benchmarks import get_benchmark
from benchmarks.nanochat.benchmark import set_constant
from benchmarks.protocol import Benchmark

KEEP = ("tokens_per_s", "mfu", "harness_peak_memory_gb", "train_tokens", "train_batches",
        "train_s", "startup_s", "epochs", "harness_gpu", "eval_windows", "eval_tokens",
        "eval_seconds", "eval_compute_s", "eval_transfer_s", "probe_compute_s",
        "harness_startup_device_s", "harness_startup_import_s", "harness_startup_build_s",
        "harness_startup_warmup_s", "harness_startup_in_step_s")


def archived_candidate(path: Path, prefix: str,
                       campaign: str | None = None) -> tuple[Candidate, dict[str, str]]:
    """The record and files of the one candidate whose id starts with `prefix`, from
    whichever campaign in `path` holds it (or from `campaign`)."""
    from nanochat_results import open_packed_archives

    with open_packed_archives(path) as archives:
        names = sorted(a.name for a in archives)
        if campaign is not None:
            archives = [a for a in archives if a.name == campaign]
            if not archives:
                raise SystemExit(f"no campaign {campaign!r} in {path}; it holds: {names}")
        ids = {a.name: [c.id for c in a.all(Candidate)] for a in archives}
        found = {(cid, name) for name, cids in ids.items() for cid in cids
                 if cid.startswith(prefix)}
        matched = sorted({cid for cid, _ in found})
        if len(matched) != 1:
            known = ", ".join(f"{name}: {' '.join(c[:12] for c in cids)}"
                              for name, cids in sorted(ids.items()))
            what = "matches no candidate" if not matched else \
                f"is ambiguous ({', '.join(matched)})"
            raise SystemExit(f"--candidate {prefix!r} {what} in {path}; candidates: {known}")
        cid = matched[0]
        home = next(a for a in archives if (cid, a.name) in found)
        return home.get(Candidate, cid), home.read_files(cid)


def trial_files(a: argparse.Namespace,
                bench: Benchmark) -> tuple[Candidate | None, dict[str, str]]:
    """The seed variant's files, or the archived candidate's (and its record), with the
    constants of `--set` on top."""
    candidate = None
    if a.archive is None:
        files = bench.seed_files(a.variant)
    else:
        candidate, files = archived_candidate(a.archive, a.candidate, a.campaign_name)
        if candidate.benchmark != bench.name:
            raise SystemExit(f"candidate {candidate.id} is of benchmark "
                             f"{candidate.benchmark!r}, not {bench.name!r}")
    for item in a.set:
        name, value = item.split("=", 1)
        files["train.py"] = set_constant(files["train.py"], name, ast.literal_eval(value))
    return candidate, files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benchmark", default="nanochat")
    ap.add_argument("--variant", default="strong")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seed-base", type=int, default=1000)
    ap.add_argument("--budget", type=int, default=None, help="training seconds")
    ap.add_argument("--split", default="val")
    ap.add_argument("--prepared", type=Path, default=None)
    ap.add_argument("--isolation", default="auto")
    ap.add_argument("--work", type=Path, default=None, help="trial folders (default: a temp dir)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="keep compiled kernels per candidate here across its val trials")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="set a constant of train.py (a variant to compare)")
    ap.add_argument("--archive", type=Path, default=None,
                    help="a packed campaign (.tgz) or an archive folder")
    ap.add_argument("--candidate", default=None, help="its candidate to run: id or prefix")
    ap.add_argument("--campaign-name", default=None,
                    help="the campaign in the packed file that holds the candidate")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    if (a.archive is None) != (a.candidate is None):
        ap.error("--archive and --candidate go together")
    bench = get_benchmark(a.benchmark)
    candidate, files = trial_files(a, bench)
    prepared = (a.prepared or Path("artifacts") / bench.name / "data").resolve()
    budget = bench.budget if a.budget is None else bench.budget.model_copy(
        update={"amount": a.budget})
    setup = trial_setup(bench, prepared, budget, threads=8, isolation=isolation_mode(a.isolation))
    cid = content_key("files", files)[:16]
    work = a.work or Path(tempfile.mkdtemp(prefix="nanochat-seeds-"))
    gpu = 0 if bench.hardware == "gpu" else None
    rows = []
    for i in range(a.seeds):
        t0 = time.monotonic()
        trial = run_trial(bench, cid, files, a.seed_base + i, a.split, setup, work_root=work,
                          prepared_dir=prepared, gpu=gpu, cache_root=a.cache)
        row = {"seed": trial.seed, "status": trial.status, "reason": trial.reason,
               "bpb": trial.metrics.get("bpb"), "wall_s": round(time.monotonic() - t0, 1),
               **{k: trial.evidence.get(k) for k in KEEP},
               "checks": {c.name: c.passed for c in trial.checks},
               "check_evidence": {c.name: c.evidence for c in trial.checks}}
        rows.append(row)
        print(json.dumps(row), flush=True)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.with_suffix(".partial.json").write_text(json.dumps(rows, indent=1))
        if trial.status != "ok":
            print(trial.log_tail[-3000:], file=sys.stderr, flush=True)
    ok = [r["bpb"] for r in rows if r["status"] == "ok"]
    out = {
        "benchmark": bench.name, "variant": None if candidate else a.variant,
        "candidate": candidate.id if candidate else None,
        "archive": str(a.archive) if a.archive else None,
        "set": a.set, "split": a.split,
        "budget_s": budget.amount, "device": setup.device, "isolation": setup.isolation,
        "libraries": setup.libraries, "data": setup.data, "n": len(ok),
        "val_bpb_mean": statistics.fmean(ok) if ok else None,
        "val_bpb_sd": statistics.stdev(ok) if len(ok) > 1 else None,
        "tokens_per_s": statistics.fmean(r["tokens_per_s"] for r in rows
                                         if r["status"] == "ok") if ok else None,
        "mfu": statistics.fmean(r["mfu"] for r in rows if r["status"] == "ok"
                                and r["mfu"] is not None) if ok and all(
            r["mfu"] is not None for r in rows if r["status"] == "ok") else None,
        "trials": rows, "command": " ".join(sys.argv),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }  # fmt: skip
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k != "trials"}))


if __name__ == "__main__":
    main()
