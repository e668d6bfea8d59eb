"""Two campaigns' trials side by side: did the second run every trial itself, and did the
trials they share give the same numbers? Trials are matched by (candidate, seed, split).

    python perf/compare_trials.py FIRST/runs/NAME/archive SECOND/runs/NAME/archive

Each folder holds an archive database (`archive.db`), or an archive in the file layout of
earlier versions (one JSON file per record).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from autolab.archive import Archive
from autolab.db.legacy import read_records
from autolab.records import Trial


def load(folder: Path) -> dict[tuple[str, int, str], Trial]:
    if (folder / "campaign.json").is_file() and not (folder / "archive.db").is_file():
        trials = read_records(folder, Trial)
    else:
        trials = Archive(folder, create=False).all(Trial)
    return {(t.candidate_id, t.seed, t.split): t for t in trials}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("first", type=Path)
    ap.add_argument("second", type=Path)
    a = ap.parse_args()
    first, second = load(a.first), load(a.second)
    if not first or not second:
        raise SystemExit("no trials in one of the archives")
    common = sorted(set(first) & set(second))
    same = sum(first[k].metrics == second[k].metrics for k in common)
    last_first = max(t.finished_at for t in first.values())
    fresh = sum(t.started_at > last_first for t in second.values())
    setups = lambda d: sorted({t.setup_key for t in d.values()})  # noqa: E731
    print(f"trials: first {len(first)}, second {len(second)}, shared {len(common)}")
    print(f"setup keys: first {setups(first)}, second {setups(second)}")
    print(f"shared trials with identical metrics: {same} of {len(common)}")
    print(f"second's trials started after the first's last trial finished: "
          f"{fresh} of {len(second)}")
    for name, d in (("first", first), ("second", second)):
        print(f"{name}: {min(t.started_at for t in d.values()):%H:%M:%S} .. "
              f"{max(t.finished_at for t in d.values()):%H:%M:%S} UTC")


if __name__ == "__main__":
    main()
