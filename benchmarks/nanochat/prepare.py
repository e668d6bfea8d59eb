"""Trusted data preparation for nanochat: a byte-level BPE and three uint16 token streams.

From a data directory (see `sources.find_shards`) `prepare` writes into `prepared_dir`:

- `tokenizer.json` (+ `tokenizer_meta.json`): a byte-level BPE of exactly `vocab_size` tokens,
  `BOS` included, trained with the `tokenizers` library on the train split only, GPT-4-style
  pre-tokenisation (digits in groups of at most two, as nanochat does for small vocabularies);
- `train.bin`, `val.bin`, `test.bin`: flat uint16 token streams, `BOS` before each document.
  Documents are never cropped: evaluation cuts a stream into consecutive windows
  (`eval_windows`), training reads consecutive windows of train.bin. The source's val files
  are split by document, from a hash of each document's key, into `val` (selection) and
  `test` (final confirmation only): val.bin holds no test document;
- `token_bytes.npy`: the UTF-8 byte length of each token (0 for BOS), so that
  bits per byte = total nats / ln 2 / sum of token_bytes over the target tokens;
- `meta.json`, written last: counts, checksums and the sources' names and sizes.

A second call with everything in place does nothing. A `tokenizer.json` already in
`prepared_dir`, with a `tokenizer_meta.json` that matches (vocabulary size, version,
fingerprint of the train files' names and sizes and of the training settings), is reused
rather than trained again: copying those two files to another machine with the same source
files (an offline GPU box, say) gives it the same tokenizer, and, encoding being
deterministic, the same token streams.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from benchmarks.nanochat.contract import BOS, TRAIN_TOKENS
from benchmarks.nanochat.sources import find_shards, iter_texts, source_files

PREPARE_VERSION = 1
TOKENIZER_VERSION = 1
SPLITS = ("train", "val", "test")
FILES = {"train": TRAIN_TOKENS, "val": "val.bin", "test": "test.bin"}
TOKENIZER = "tokenizer.json"
TOKENIZER_META = "tokenizer_meta.json"
TOKEN_BYTES = "token_bytes.npy"
META = "meta.json"
# GPT-4 (cl100k) split pattern, with numbers in groups of 1-2 digits as nanochat uses it.
SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|"""
    r"""\s*[\r\n]|\s+(?!\S)|\s+"""
)
HELDOUT_SALT = "nanochat-heldout-v1"  # val/test assignment of the source's val documents
ENCODE_BATCH_CHARS = 8_000_000  # text per encode_batch call: bounds memory


def heldout_split(key: str) -> str:
    """'val' or 'test' for a document of the source's val files, from a hash of its key."""
    digest = hashlib.sha256(f"{HELDOUT_SALT}:{key}".encode()).digest()
    return "val" if digest[0] < 128 else "test"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def _read_json(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


# ---------------------------------------------------------------------------------------------
# Tokenizer


def _byte_decoder() -> dict[str, int]:
    """The GPT-2 byte <-> printable character table that byte-level BPE tokens are written in."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]  # fmt: skip
    chars = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return {c: b for b, c in chars.items()}


def _new_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE(byte_fallback=False, unk_token=None, fuse_unk=False))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])  # fmt: skip
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE of exactly `vocab_size` tokens (BOS included) trained on `texts`."""
    from tokenizers import pre_tokenizers, trainers

    if not 257 < vocab_size <= 1 << 16:
        raise ValueError(f"vocab_size must be in 258..65536 (uint16 streams), not {vocab_size}")
    tok = _new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=0, show_progress=False, special_tokens=[BOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    tok.train_from_iterator(texts, trainer)
    if tok.get_vocab_size() != vocab_size:
        raise ValueError(f"the training text allows only {tok.get_vocab_size()} tokens, "
                         f"not the {vocab_size} asked for: give it more text")
    tok.encode_special_tokens = True
    return tok


def load_tokenizer(prepared_dir: Path):
    """The prepared tokenizer. A literal BOS string inside a text is encoded as text, never as
    the BOS token (that switch is not stored in tokenizer.json, so it is set here)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(prepared_dir) / TOKENIZER))
    tok.encode_special_tokens = True
    return tok


def token_byte_lengths(tok) -> np.ndarray:
    """int32 (vocab_size,): the UTF-8 byte length of each token; 0 for special tokens."""
    decoder = _byte_decoder()
    out = np.zeros(tok.get_vocab_size(), dtype=np.int32)
    special = {t.content for t in tok.get_added_tokens_decoder().values() if t.special}
    for token, i in tok.get_vocab().items():
        out[i] = 0 if token in special else len(token)
        if token not in special and any(c not in decoder for c in token):
            raise ValueError(f"token {i} ({token!r}) is not a byte-level token")
    return out


def _tokenizer_fingerprint(train_files: list[Path], vocab_size: int, max_tokenizer_chars: int,
                           max_docs: int | None) -> str:
    what = {"files": [[p.name, p.stat().st_size] for p in train_files], "vocab_size": vocab_size,
            "max_tokenizer_chars": max_tokenizer_chars, "max_docs": max_docs,
            "pattern": SPLIT_PATTERN, "bos": BOS, "version": TOKENIZER_VERSION}  # fmt: skip
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def _reusable_tokenizer(prepared_dir: Path, vocab_size: int, fingerprint: str) -> dict | None:
    meta = _read_json(prepared_dir / TOKENIZER_META)
    path = prepared_dir / TOKENIZER
    if meta is None or not path.is_file():
        return None
    if (meta.get("version"), meta.get("vocab_size"), meta.get("source")) != (
        TOKENIZER_VERSION, vocab_size, fingerprint
    ) or meta.get("sha256") != _sha256(path):
        return None
    return meta


def _training_texts(train_files: list[Path], max_chars: int, max_docs: int | None,
                    stats: dict) -> Iterator[str]:
    """The train split's texts, cut off after `max_chars` characters in all."""
    left = max_chars
    for _, text in iter_texts(train_files, max_docs=max_docs):
        if left <= 0:
            return
        piece = text[:left]
        left -= len(piece)
        stats["docs"] += 1
        stats["chars"] += len(piece)
        yield piece


# ---------------------------------------------------------------------------------------------
# Token streams


class _StreamWriter:
    """Encodes documents in batches into a uint16 stream (BOS before each), atomically."""

    def __init__(self, tok, path: Path, bos: int, token_bytes: np.ndarray):
        self.tok, self.path, self.bos, self.token_bytes = tok, path, bos, token_bytes
        self.tmp = path.with_name(path.name + ".tmp")
        self.file = self.tmp.open("wb")
        self.batch: list[str] = []
        self.batch_chars = 0
        self.docs = self.tokens = self.text_bytes = 0

    def add(self, text: str) -> None:
        self.batch.append(text)
        self.batch_chars += len(text)
        if self.batch_chars >= ENCODE_BATCH_CHARS:
            self.flush()

    def flush(self) -> None:
        if not self.batch:
            return
        encodings = self.tok.encode_batch_fast(self.batch, add_special_tokens=False)
        bos = np.array([self.bos], dtype=np.uint16)
        parts = []
        for enc in encodings:
            parts.append(bos)
            parts.append(np.asarray(enc.ids, dtype=np.uint16))
        chunk = np.concatenate(parts)
        text_bytes = sum(len(t.encode("utf-8")) for t in self.batch)
        if int(self.token_bytes[chunk].sum(dtype=np.int64)) != text_bytes:
            raise RuntimeError("tokenization is not byte-exact: token bytes differ from the text's")
        chunk.tofile(self.file)
        self.docs += len(self.batch)
        self.tokens += chunk.size
        self.text_bytes += text_bytes
        self.batch, self.batch_chars = [], 0

    def close(self) -> dict:
        self.flush()
        self.file.close()
        self.tmp.replace(self.path)
        return {"documents": self.docs, "tokens": self.tokens, "text_bytes": self.text_bytes,
                "sha256": _sha256(self.path)}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# prepare


def _load_meta(prepared_dir: Path) -> dict | None:
    """meta.json when it is current and every file it describes is in place."""
    meta = _read_json(prepared_dir / META)
    if meta is None or meta.get("version") != PREPARE_VERSION:
        return None
    try:
        for s in SPLITS:
            path = prepared_dir / FILES[s]
            if not path.is_file() or path.stat().st_size != 2 * meta["splits"][s]["tokens"]:
                return None
        if _sha256(prepared_dir / TOKENIZER) != meta["tokenizer"]["sha256"]:
            return None
        if not (prepared_dir / TOKEN_BYTES).is_file():
            return None
    except (OSError, KeyError, TypeError):
        return None
    return meta


def _describe(meta: dict) -> dict[str, str]:
    out = {"corpus": meta["corpus"], "version": str(meta["version"]),
           "vocab_size": str(meta["vocab_size"]), "bos_id": str(meta["bos_id"]),
           "tokenizer": meta["tokenizer"]["sha256"][:16]}  # fmt: skip
    for s in SPLITS:
        m = meta["splits"][s]
        out[s] = (f"{m['documents']} docs, {m['tokens']} tokens, {m['text_bytes']} bytes "
                  f"({m['text_bytes'] / max(m['tokens'], 1):.2f} bytes/token)")
    return out


def already_prepared(prepared_dir: Path, vocab_size: int) -> dict[str, str] | None:
    """The description of a complete prepared directory of this vocabulary (token files
    shipped to a machine without the source shards), or None."""
    meta = _load_meta(Path(prepared_dir))
    if meta is None or meta["vocab_size"] != vocab_size:
        return None
    return _describe(meta)


def prepare(
    data_dir: Path,
    prepared_dir: Path,
    *,
    vocab_size: int,
    max_tokenizer_chars: int = 2_000_000_000,
    max_docs: int | None = None,
) -> dict[str, str]:
    """Build the tokenizer, the three token streams, token_bytes.npy and meta.json.

    `max_tokenizer_chars`: characters of the train split the tokenizer is trained on (the
    first ones). `max_docs`: at most this many documents from the train files, and at most
    this many from the val files before their val/test split (for quick runs).

    A no-op returning the description when meta.json is current for these settings and
    sources. When the source files are absent but a complete prepared directory of the
    same vocabulary is there (token files shipped to an offline machine), that is used.
    """
    data_dir, prepared_dir = Path(data_dir), Path(prepared_dir)
    settings = {"vocab_size": vocab_size, "max_tokenizer_chars": max_tokenizer_chars,
                "max_docs": max_docs}  # fmt: skip
    meta = _load_meta(prepared_dir)
    try:
        train_files, val_files = find_shards(data_dir)
    except FileNotFoundError:
        if (shipped := already_prepared(prepared_dir, vocab_size)) is not None:
            return shipped
        raise
    sources = source_files(data_dir)
    if meta is not None and meta["sources"] == sources and meta["settings"] == settings:
        return _describe(meta)

    prepared_dir.mkdir(parents=True, exist_ok=True)
    (prepared_dir / META).unlink(missing_ok=True)  # written again last, once all is in place
    seconds: dict[str, float] = {}
    fingerprint = _tokenizer_fingerprint(train_files, vocab_size, max_tokenizer_chars, max_docs)
    tok_meta = _reusable_tokenizer(prepared_dir, vocab_size, fingerprint)
    if tok_meta is not None:
        tok, reused = load_tokenizer(prepared_dir), True
    else:
        start = time.perf_counter()
        stats = {"docs": 0, "chars": 0}
        texts = _training_texts(train_files, max_tokenizer_chars, max_docs, stats)
        tok, reused = train_tokenizer(texts, vocab_size), False
        seconds["tokenizer"] = round(time.perf_counter() - start, 2)
        tmp = prepared_dir / (TOKENIZER + ".tmp")
        tok.save(str(tmp))
        tmp.replace(prepared_dir / TOKENIZER)
        tok_meta = {"version": TOKENIZER_VERSION, "vocab_size": vocab_size, "source": fingerprint,
                    "sha256": _sha256(prepared_dir / TOKENIZER), "bos_id": tok.token_to_id(BOS),
                    "pattern": SPLIT_PATTERN, "trained_on_docs": stats["docs"],
                    "trained_on_chars": stats["chars"], "seconds": seconds["tokenizer"],
                    "train_files": [p.name for p in train_files]}  # fmt: skip
        _write_json(prepared_dir / TOKENIZER_META, tok_meta)
    bos = tok.token_to_id(BOS)
    lengths = token_byte_lengths(tok)
    np.save(prepared_dir / (TOKEN_BYTES + ".tmp.npy"), lengths)
    (prepared_dir / (TOKEN_BYTES + ".tmp.npy")).replace(prepared_dir / TOKEN_BYTES)

    start = time.perf_counter()
    splits = {}
    writer = _StreamWriter(tok, prepared_dir / FILES["train"], bos, lengths)
    for _, text in iter_texts(train_files, max_docs=max_docs):
        writer.add(text)
    splits["train"] = writer.close()
    writers = {s: _StreamWriter(tok, prepared_dir / FILES[s], bos, lengths)
               for s in ("val", "test")}  # fmt: skip
    for key, text in iter_texts(val_files, max_docs=max_docs):
        writers[heldout_split(key)].add(text)
    splits.update({s: w.close() for s, w in writers.items()})
    seconds["encode"] = round(time.perf_counter() - start, 2)

    meta = {
        "version": PREPARE_VERSION,
        "corpus": f"{train_files[0].parent.name}: {len(train_files)} train + "
                  f"{len(val_files)} val parquet files",
        "vocab_size": vocab_size,
        "bos_id": bos,
        "settings": settings,
        "sources": sources,
        "tokenizer": {"sha256": tok_meta["sha256"], "source": fingerprint, "reused": reused,
                      "pattern": SPLIT_PATTERN},  # fmt: skip
        "heldout_split": f"sha256('{HELDOUT_SALT}:' + document key), first byte < 128: val",
        "splits": splits,
        "seconds": seconds,
    }
    _write_json(prepared_dir / META, meta)
    return _describe(meta)


# ---------------------------------------------------------------------------------------------
# Readers


def _meta(prepared_dir: Path) -> dict:
    meta = _load_meta(Path(prepared_dir))
    if meta is None:
        raise FileNotFoundError(f"nanochat data not prepared under {prepared_dir}")
    return meta


def data_version(prepared_dir: Path) -> str:
    """Hash of the token files, tokenizer and token_bytes.npy, read again (not taken from
    meta.json), so that any edit of the prepared data changes every trial's key."""
    prepared_dir = Path(prepared_dir)
    _meta(prepared_dir)
    names = [*(FILES[s] for s in SPLITS), TOKENIZER, TOKEN_BYTES]
    digests = {name: _sha256(prepared_dir / name) for name in names}
    return hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()[:16]


def load_split(prepared_dir: Path, split: str) -> np.ndarray:
    """The split's token stream, memory-mapped read-only (uint16)."""
    if split not in FILES:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    return np.memmap(Path(prepared_dir) / FILES[split], dtype=np.uint16, mode="r")


def bos_id(prepared_dir: Path) -> int:
    return int(_meta(prepared_dir)["bos_id"])


def token_bytes(prepared_dir: Path) -> np.ndarray:
    """int32 (vocab_size,): UTF-8 bytes of each token, 0 for BOS."""
    return np.load(Path(prepared_dir) / TOKEN_BYTES)


def eval_windows(tokens: np.ndarray, length: int, max_windows: int = 0) -> np.ndarray:
    """(n, length + 1) windows of a token stream with stride `length`: window i is
    tokens[i*length : i*length + length + 1], so each token after the first is a target of
    exactly one window. The tail too short for a whole window is dropped. With
    max_windows > 0, at most that many evenly spaced windows of those."""
    if length < 1:
        raise ValueError(f"window length must be positive, not {length}")
    n = max((len(tokens) - 1) // length, 0)
    index = np.arange(n)
    if 0 < max_windows < n:
        index = index[(np.arange(max_windows) * n) // max_windows]
    starts = index * length
    return np.asarray(tokens)[starts[:, None] + np.arange(length + 1)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Prepare the nanochat tokenizer and token files.")
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("prepared_dir", type=Path)
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--max-tokenizer-chars", type=int, default=2_000_000_000)
    parser.add_argument("--max-docs", type=int, default=None)
    args = parser.parse_args(argv)
    desc = prepare(args.data_dir, args.prepared_dir, vocab_size=args.vocab_size,
                   max_tokenizer_chars=args.max_tokenizer_chars, max_docs=args.max_docs)
    print(json.dumps(desc, indent=2))


if __name__ == "__main__":
    main()
