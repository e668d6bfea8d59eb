"""Trusted data preparation for the speedrun: three uint16 token streams and their metadata.

From a data directory laid out as nanochat's (`sources.find_shards`: `train_*.parquet` +
`val.parquet`, or an `enwiki/` folder holding them) `prepare` writes into `prepared_dir`:

- `train.bin`, `val.bin`, `test.bin`: flat uint16 streams, the end-of-text token before
  each document. Nothing is cropped: training reads consecutive windows of train.bin and
  validation cuts val.bin (or test.bin) into consecutive rows. The source's val documents
  go to `val` (selection) or `test` (final confirmation only) by a hash of their id, the
  same rule as nanochat's, so val.bin holds no test document;
- `meta.json`, written last: tokenizer, counts, checksums and the sources' names and sizes.

Two tokenizers: `gpt2`, the GPT-2 BPE that tiktoken builds offline from `encoder.json` and
`vocab.bpe` (a `gpt2-bpe/` folder beside or inside the data directory; the files' hashes
are checked), and `bytes`, UTF-8 bytes with 256 as end of text (the CPU preset). A second
call with everything in place does nothing; token files shipped to a machine without
the sources (an offline GPU box) are used as they are.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.nanochat.prepare import _read_json, _sha256, _write_json, heldout_split
from benchmarks.nanochat.sources import find_shards, iter_texts, source_files
from benchmarks.speedrun.contract import TRAIN_TOKENS

PREPARE_VERSION = 1
SPLITS = ("train", "val", "test")
FILES = {"train": TRAIN_TOKENS, "val": "val.bin", "test": "test.bin"}
META = "meta.json"
BPE_FILES = {  # the standard GPT-2 BPE files and their sha256
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}
GPT2_PATTERN = (r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|"""
                r"""\s+(?!\S)|\s""")
GPT2_EOT = 50256
BYTES_EOT = 256
ENCODE_BATCH_DOCS = 512  # documents per encode call: bounds memory


# ---------------------------------------------------------------------------------------------
# Tokenizers: text -> token ids (no end-of-text token; the writer adds it)


def find_bpe_dir(data_dir: Path) -> Path:
    """`gpt2-bpe/` in the data directory or beside it (when data_dir is the enwiki folder)."""
    data_dir = Path(data_dir)
    for candidate in (data_dir / "gpt2-bpe", data_dir.parent / "gpt2-bpe", data_dir):
        if all((candidate / name).is_file() for name in BPE_FILES):
            return candidate
    raise FileNotFoundError(f"no GPT-2 BPE files ({', '.join(BPE_FILES)}) in {data_dir}, "
                            f"{data_dir / 'gpt2-bpe'} or {data_dir.parent / 'gpt2-bpe'}")


def gpt2_encoding(bpe_dir: Path):
    """The GPT-2 encoding, built by tiktoken from local files (no download); the files
    must be the standard ones."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    for name, digest in BPE_FILES.items():
        if _sha256(Path(bpe_dir) / name) != digest:
            raise ValueError(f"{Path(bpe_dir) / name} is not the standard GPT-2 file")
    ranks = data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(Path(bpe_dir) / "vocab.bpe"),
                                            encoder_json_file=str(Path(bpe_dir) / "encoder.json"))
    return tiktoken.Encoding(name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": GPT2_EOT})


def encoder(tokenizer: str, data_dir: Path) -> tuple[Callable[[list[str]], list], int, dict]:
    """(encode a batch of texts, end-of-text id, what meta.json records of the tokenizer)."""
    if tokenizer == "bytes":
        return (lambda texts: [np.frombuffer(t.encode("utf-8"), np.uint8) for t in texts],
                BYTES_EOT, {"name": "bytes", "vocab_size": 257})
    if tokenizer == "gpt2":
        bpe_dir = find_bpe_dir(data_dir)
        enc = gpt2_encoding(bpe_dir)
        return (lambda texts: enc.encode_ordinary_batch(texts, num_threads=8), GPT2_EOT,
                {"name": "gpt2", "vocab_size": enc.n_vocab, "files": BPE_FILES})
    raise ValueError(f"unknown tokenizer {tokenizer!r}: gpt2 or bytes")


# ---------------------------------------------------------------------------------------------
# Token streams


class _StreamWriter:
    """Encodes documents in batches into a uint16 stream (end of text before each),
    written to a temporary file and renamed into place when closed."""

    def __init__(self, path: Path, encode: Callable[[list[str]], list], eot: int):
        self.path, self.encode, self.eot = path, encode, eot
        self.tmp = path.with_name(path.name + ".tmp")
        self.file = self.tmp.open("wb")
        self.batch: list[str] = []
        self.docs = self.tokens = self.text_bytes = 0

    def add(self, text: str) -> None:
        self.batch.append(text)
        if len(self.batch) >= ENCODE_BATCH_DOCS:
            self.flush()

    def flush(self) -> None:
        if not self.batch:
            return
        eot = np.array([self.eot], dtype=np.uint16)
        parts = []
        for ids in self.encode(self.batch):
            parts += [eot, np.asarray(ids, dtype=np.uint16)]
        chunk = np.concatenate(parts)
        chunk.tofile(self.file)
        self.docs += len(self.batch)
        self.tokens += chunk.size
        self.text_bytes += sum(len(t.encode("utf-8")) for t in self.batch)
        self.batch = []

    def close(self) -> dict:
        self.flush()
        self.file.close()
        self.tmp.replace(self.path)
        return {"documents": self.docs, "tokens": self.tokens, "text_bytes": self.text_bytes,
                "sha256": _sha256(self.path)}


def _write_streams(train: list[Path], val: list[Path], prepared_dir: Path,
                   encode: Callable, eot: int, max_docs: int | None) -> dict:
    writer = _StreamWriter(prepared_dir / FILES["train"], encode, eot)
    for _, text in iter_texts(train, max_docs=max_docs):
        writer.add(text)
    splits = {"train": writer.close()}
    writers = {s: _StreamWriter(prepared_dir / FILES[s], encode, eot) for s in ("val", "test")}
    for key, text in iter_texts(val, max_docs=max_docs):
        writers[heldout_split(key)].add(text)
    return splits | {s: w.close() for s, w in writers.items()}


# ---------------------------------------------------------------------------------------------
# prepare


def _load_meta(prepared_dir: Path) -> dict | None:
    """meta.json when it is current and every stream it describes is in place."""
    meta = _read_json(Path(prepared_dir) / META)
    if meta is None or meta.get("version") != PREPARE_VERSION:
        return None
    try:
        for s in SPLITS:
            path = Path(prepared_dir) / FILES[s]
            if not path.is_file() or path.stat().st_size != 2 * meta["splits"][s]["tokens"]:
                return None
    except (OSError, KeyError, TypeError):
        return None
    return meta


def _describe(meta: dict) -> dict[str, str]:
    out = {"corpus": meta["corpus"], "version": str(meta["version"]),
           "tokenizer": meta["tokenizer"]["name"], "eot_id": str(meta["eot_id"])}
    for s in SPLITS:
        m = meta["splits"][s]
        out[s] = (f"{m['documents']} docs, {m['tokens']} tokens, {m['text_bytes']} bytes "
                  f"({m['text_bytes'] / max(m['tokens'], 1):.2f} bytes/token, "
                  f"{2 * m['tokens'] / 2**20:.1f} MiB)")
    return out


def already_prepared(prepared_dir: Path, tokenizer: str) -> dict[str, str] | None:
    """The description of a complete prepared directory made with this tokenizer (token
    files shipped to a machine without the sources), or None."""
    meta = _load_meta(Path(prepared_dir))
    if meta is None or meta["tokenizer"]["name"] != tokenizer:
        return None
    return _describe(meta)


def prepare(data_dir: Path, prepared_dir: Path, *, tokenizer: str,
            max_docs: int | None = None) -> dict[str, str]:
    """Write the three token streams and meta.json; a no-op when meta.json is current for
    these sources and settings. `max_docs`: at most this many documents from the train
    files and from the val files (before their val/test split), for quick runs."""
    data_dir, prepared_dir = Path(data_dir), Path(prepared_dir)
    settings = {"tokenizer": tokenizer, "max_docs": max_docs}
    try:
        train, val = find_shards(data_dir)
    except FileNotFoundError:
        if (shipped := already_prepared(prepared_dir, tokenizer)) is not None:
            return shipped
        raise
    sources = source_files(data_dir)
    meta = _load_meta(prepared_dir)
    if meta is not None and meta["sources"] == sources and meta["settings"] == settings:
        return _describe(meta)
    prepared_dir.mkdir(parents=True, exist_ok=True)
    (prepared_dir / META).unlink(missing_ok=True)  # written again last, once all is in place
    encode, eot, tok_meta = encoder(tokenizer, data_dir)
    start = time.perf_counter()
    splits = _write_streams(train, val, prepared_dir, encode, eot, max_docs)
    meta = {
        "version": PREPARE_VERSION,
        "corpus": f"{train[0].parent.name}: {len(train)} train + {len(val)} val parquet files",
        "tokenizer": tok_meta, "eot_id": eot, "settings": settings, "sources": sources,
        "heldout_split": "nanochat's: sha256('nanochat-heldout-v1:' + document id), first "
                         "byte < 128: val",
        "splits": splits, "seconds": round(time.perf_counter() - start, 2),
    }  # fmt: skip
    _write_json(prepared_dir / META, meta)
    return _describe(meta)


# ---------------------------------------------------------------------------------------------
# Readers


def data_version(prepared_dir: Path) -> str:
    """Hash of the token files, read again (not taken from meta.json), so that any edit of
    the prepared data changes every trial's key."""
    prepared_dir = Path(prepared_dir)
    if _load_meta(prepared_dir) is None:
        raise FileNotFoundError(f"speedrun data not prepared under {prepared_dir}")
    digests = {FILES[s]: _sha256(prepared_dir / FILES[s]) for s in SPLITS}
    return hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()[:16]


def load_split(prepared_dir: Path, split: str) -> np.ndarray:
    """The split's token stream, memory-mapped read-only (uint16)."""
    if split not in FILES:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    return np.memmap(Path(prepared_dir) / FILES[split], dtype=np.uint16, mode="r")


def token_counts(prepared_dir: Path) -> dict[str, int]:
    meta = _load_meta(Path(prepared_dir))
    if meta is None:
        raise FileNotFoundError(f"speedrun data not prepared under {prepared_dir}")
    return {s: int(meta["splits"][s]["tokens"]) for s in SPLITS}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Prepare the speedrun token files.")
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("prepared_dir", type=Path)
    parser.add_argument("--tokenizer", choices=("gpt2", "bytes"), default="gpt2")
    parser.add_argument("--max-docs", type=int, default=None)
    args = parser.parse_args(argv)
    desc = prepare(args.data_dir, args.prepared_dir, tokenizer=args.tokenizer,
                   max_docs=args.max_docs)
    print(json.dumps(desc, indent=2))


if __name__ == "__main__":
    main()
