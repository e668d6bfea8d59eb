"""Compiled-kernel caches of nanochat trials: kept per candidate for its selection trials
only, and bounded on disk."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from benchmarks.nanochat import benchmark as nb
from benchmarks.nanochat.contract import CACHE_ENV_VARS
from benchmarks.protocol import Budget, TrialContext


def _ctx(tmp_path: Path, split: str, cache_dir: Path | None) -> TrialContext:
    return TrialContext(workspace=tmp_path / "ws", inputs_dir=tmp_path / "in",
                        outputs_dir=tmp_path / "out", prepared_dir=tmp_path, seed=1000,
                        split=split, budget=Budget(unit="train_seconds", amount=60,
                                                   wall_clock_s=1500, memory_mb=1000),
                        python="python3", gpu=0, cache_dir=cache_dir)


@pytest.mark.parametrize("split", ["val", "audit", "test"])
def test_only_selection_trials_share_the_candidates_cache(tmp_path, monkeypatch, split):
    monkeypatch.setattr(nb._prepare, "bos_id", lambda _dir: 0)
    store = tmp_path / "cache" / "cand1"
    ctx = _ctx(tmp_path, split, store)
    train = nb.NanoChat().steps(ctx)[0]
    folders = {train.env[v] for v in CACHE_ENV_VARS}
    if split == "val":
        # the same path on every seed of this candidate, writable from the sandbox
        assert all(Path(f).parent == store for f in folders)
        assert train.host_write == (str(store),)
    else:
        # replication and test trials compile from nothing, inside their own outputs
        assert all(Path(f).is_relative_to(ctx.outputs("train")) for f in folders)
        assert train.host_write == ()
    no_store = nb.NanoChat().steps(_ctx(tmp_path, split, None))[0]
    assert all(Path(no_store.env[v]).is_relative_to(tmp_path / "out") for v in CACHE_ENV_VARS)


def _cache(root: Path, name: str, size: int, age_s: float) -> Path:
    d = root / name / "inductor"
    d.mkdir(parents=True)
    (d / "kernel.bin").write_bytes(b"x" * size)
    t = time.time() - age_s
    os.utime(root / name, (t, t))
    return root / name


def test_pruning_keeps_the_most_recent_and_drops_oversized(tmp_path):
    root = tmp_path / "cache"
    fresh = _cache(root, "fresh", 10, 0)
    mid = _cache(root, "mid", 10, 100)
    old = _cache(root, "old", 10, 200)
    huge = _cache(root, "huge", 5000, 50)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "keep.txt").write_text("not a cache")
    (root / "link").symlink_to(outside, target_is_directory=True)
    nb.prune_caches(root, keep=2, max_bytes=1000)
    assert fresh.exists() and mid.exists()
    assert not old.exists()  # third most recent of the rest
    assert not huge.exists()  # over the size bound even though recent
    assert (outside / "keep.txt").exists()  # a link is never followed nor pruned
    nb.prune_caches(tmp_path / "absent", keep=2, max_bytes=1000)  # nothing to do
