"""Gather nanochat measurement files (written by perf/nanochat_seeds.py and the campaign
report) into benchmarks/nanochat/results.json, the headline numbers of RESULTS.md.

    python perf/nanochat_results.py --strong-60 A.json B.json ... [--weak-60 ...]
        [--strong-300 ...] [--out benchmarks/nanochat/results.json]

Each list pools the ok trials of its files (one seed each, or several). A file may also
be a campaign's archive, packed as `perf/nanochat_gpu.sh collect` packs it (a .tgz, with
the archive database or, from earlier versions, one JSON file per record): its seed
candidate's val trials are taken, the campaign's own baseline of the seed. A key
with no files is written as null: not measured yet.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tarfile
import tempfile
from pathlib import Path


def read_measurement(path: Path) -> dict:
    """A perf/nanochat_seeds.py file, or the seed's val trials of a packed campaign."""
    if not path.name.endswith(".tgz"):
        return json.loads(path.read_text())
    with tarfile.open(path) as tar:
        names = tar.getnames()
        db = next((n for n in names if n.endswith("/archive/archive.db")), None)
        meta, trials = _from_database(tar, db) if db else _from_files(tar, names)
    setup = meta["fixed"]["setup"]
    trials.sort(key=lambda t: t["seed"])
    return {"device": setup["device"], "budget_s": setup["budget"]["amount"],
            "trials": [{"seed": t["seed"], "status": t["status"], "bpb": t["metrics"].get("bpb"),
                        **t["evidence"]} for t in trials]}


def _from_files(tar: tarfile.TarFile, names: list[str]) -> tuple[dict, list[dict]]:
    """An archive in the file layout of earlier versions: one JSON file per record."""
    def load(name: str) -> dict:
        return json.load(tar.extractfile(name))

    meta = load(next(n for n in names if n.endswith("/archive/campaign.json")))
    trials = [t for t in (load(n) for n in names if "/archive/trials/" in n
                          and n.endswith(".json"))
              if t["candidate_id"] == meta["seed_candidate"] and t["split"] == "val"]
    return meta, trials


def _from_database(tar: tarfile.TarFile, db: str) -> tuple[dict, list[dict]]:
    """An archive database (with its write-ahead log, if it was packed while open)."""
    from autolab.archive import Archive

    with tempfile.TemporaryDirectory() as tmp:
        for member in tar.getmembers():
            if member.name.startswith(db):
                tar.extract(member, tmp, filter="data")
        with Archive(Path(tmp) / db.rsplit("/", 1)[0], create=False) as archive:
            meta = archive.campaign()
            trials = [t.model_dump(mode="json") for t in archive.trials_of(meta.seed_candidate)
                      if t.split == "val"]
    return meta.model_dump(mode="json"), trials


def pooled(paths: list[Path]) -> dict | None:
    if not paths:
        return None
    files = [read_measurement(p) for p in paths]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for key in ("strong-60", "weak-60", "strong-300"):
        ap.add_argument(f"--{key}", nargs="*", type=Path, default=[])
    ap.add_argument("--campaign", type=Path, default=None, help="campaign summary JSON")
    ap.add_argument("--transfer", type=Path, default=None, help="transfer summary JSON")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/nanochat/results.json"))
    a = ap.parse_args()
    s300 = pooled(a.strong_300)
    out = {
        "strong_seed_60s": pooled(a.strong_60),
        "weak_seed_60s": pooled(a.weak_60),
        "strong_seed_300s": None if s300 is None else {
            "device": s300["device"], "val_bpb": s300["val_bpb_mean"], "n": s300["n"],
            "sources": s300["sources"]},
        "campaign": json.loads(a.campaign.read_text()) if a.campaign else None,
        "transfer": json.loads(a.transfer.read_text()) if a.transfer else None,
    }  # fmt: skip
    a.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
