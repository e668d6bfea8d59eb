"""The speedrun's data: token streams with the end-of-text token before every whole
document, the val/test split by document, the GPT-2 BPE built offline by tiktoken,
idempotence, shipped token files, and the validation rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmarks.nanochat.prepare import heldout_split
from benchmarks.speedrun import prepare as prep
from benchmarks.speedrun.benchmark import validation_rows
from benchmarks.speedrun.contract import PRESETS

BPE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "gpt2-bpe"
LONG = "The history of the valley. " * 400  # far longer than a validation row


def corpus(root: Path) -> tuple[Path, list[str], dict[int, str]]:
    """enwiki/ with two train files and a val file; returns (data_dir, train, val by id)."""
    d = root / "enwiki"
    d.mkdir(parents=True)
    train = [f"Article {i}: über {i * 7} cafés, 東京 and more.\n" * (i + 1) for i in range(12)]
    train.append(LONG)
    val = {1000 + i: f"Held-out text number {i}, with numbers {i ** 3}." for i in range(40)}
    for name, texts, ids in (("train_000", train[:6], range(6)),
                             ("train_001", train[6:], range(6, len(train))),
                             ("val", list(val.values()), list(val))):
        pq.write_table(pa.table({"id": pa.array(list(ids), pa.int64()),
                                 "title": [f"t{i}" for i in ids], "text": texts}),
                       d / f"{name}.parquet", row_group_size=4)
    return root, train, val


def documents(stream: np.ndarray, eot: int) -> list[np.ndarray]:
    cuts = np.flatnonzero(stream == eot)
    assert cuts[0] == 0  # the stream starts with a document
    return [stream[a + 1 : b] for a, b in zip(cuts, [*cuts[1:], len(stream)], strict=True)]


def test_byte_streams_hold_every_document_whole_and_split_val_from_test(tmp_path):
    data, train, val = corpus(tmp_path)
    out = tmp_path / "prepared"
    desc = prep.prepare(data, out, tokenizer="bytes")
    assert desc["tokenizer"] == "bytes" and desc["eot_id"] == "256"
    docs = documents(np.fromfile(out / "train.bin", np.uint16), 256)
    assert [bytes(d.astype(np.uint8)).decode() for d in docs] == train  # nothing cropped
    held = {s: [bytes(d.astype(np.uint8)).decode() for d in
                documents(np.fromfile(out / f"{s}.bin", np.uint16), 256)]
            for s in ("val", "test")}
    for key, text in val.items():
        side = heldout_split(str(key))
        assert text in held[side] and text not in held["test" if side == "val" else "val"]
    assert held["val"] and held["test"]
    counts = prep.token_counts(out)
    assert counts["train"] == sum(len(t.encode()) + 1 for t in train)


def test_prepare_is_idempotent_and_token_files_can_be_shipped(tmp_path):
    data, _, _ = corpus(tmp_path)
    out = tmp_path / "prepared"
    first = prep.prepare(data, out, tokenizer="bytes")
    stamp = (out / "train.bin").stat().st_mtime_ns
    version = prep.data_version(out)
    assert prep.prepare(data, out, tokenizer="bytes") == first
    assert (out / "train.bin").stat().st_mtime_ns == stamp
    shipped = tmp_path / "elsewhere"
    shipped.mkdir()
    for name in ("train.bin", "val.bin", "test.bin", "meta.json"):
        (shipped / name).write_bytes((out / name).read_bytes())
    assert prep.prepare(tmp_path / "no-sources", shipped, tokenizer="bytes") == first
    assert prep.already_prepared(shipped, "gpt2") is None  # another tokenizer's files
    with (out / "val.bin").open("r+b") as f:
        f.write(b"\x01\x00")
    assert prep.data_version(out) != version


def test_the_gpt2_encoding_is_built_offline_from_the_bpe_files(tmp_path):
    pytest.importorskip("tiktoken")
    if not BPE_DIR.is_dir():
        pytest.skip("no GPT-2 BPE files beside the project (shared/data/gpt2-bpe)")
    enc = prep.gpt2_encoding(BPE_DIR)
    assert enc.n_vocab == 50257 and enc.eot_token == 50256
    assert enc.encode_ordinary("Hello world") == [15496, 995]
    data, train, _ = corpus(tmp_path)
    (tmp_path / "gpt2-bpe").symlink_to(BPE_DIR)
    out = tmp_path / "prepared"
    prep.prepare(data, out, tokenizer="gpt2")
    docs = documents(np.fromfile(out / "train.bin", np.uint16), 50256)
    assert [enc.decode(d.tolist()) for d in docs] == train
    assert max(len(d) for d in docs) > PRESETS["short"].val_len  # the long one, whole
    meta = json.loads((out / "meta.json").read_text())
    assert meta["tokenizer"]["name"] == "gpt2" and meta["eot_id"] == 50256


def test_bpe_files_other_than_the_standard_ones_are_refused(tmp_path):
    pytest.importorskip("tiktoken")
    for name in prep.BPE_FILES:
        (tmp_path / name).write_text("{}")
    with pytest.raises(ValueError, match="not the standard GPT-2 file"):
        prep.gpt2_encoding(tmp_path)
    with pytest.raises(FileNotFoundError):
        prep.find_bpe_dir(tmp_path / "missing")


def test_validation_rows_are_consecutive_windows_and_the_audit_rows_are_shifted():
    preset = PRESETS["cpu"]
    half = np.arange(10_000, dtype=np.uint16)
    rows = validation_rows(half, "val", preset)
    assert rows.shape == (preset.val_rows, preset.val_len + 1)
    assert all(np.array_equal(r, np.arange(r[0], r[0] + preset.val_len + 1)) for r in rows)
    assert all(r[0] % preset.val_len == 0 for r in rows)  # on the stream's row grid
    audit = validation_rows(half, "audit", preset)
    assert all(r[0] % preset.val_len == preset.val_len // 2 for r in audit)
