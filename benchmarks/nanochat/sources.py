"""Where the nanochat text comes from: local parquet shards, and the public shards for
machines that are online.

Two layouts of a data directory are understood (see `find_shards`):

- enwiki (the default, `../shared/data/enwiki/`): `train_*.parquet` and `val.parquet`;
- nanochat / FineWeb style: `shard_NNNNN.parquet` (or any `*.parquet`), where the last file in
  sorted order is the validation shard. `download_shards` fetches such shards; asked for
  shards 0..n-1 plus the dataset's last shard (`val_shard`), it leaves a directory in which the
  last file is the pinned validation shard, as in nanochat.

Every file needs a `text` column; an `id` column, if present, keys each document (otherwise a
hash of its text does), so that splits made from the keys are stable.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

PARQUET_MAGIC = b"PAR1"


@dataclass(frozen=True)
class ShardSet:
    repo: str  # HuggingFace dataset repository
    max_shard: int  # index of the last shard, pinned as the validation shard

    @property
    def base_url(self) -> str:
        return f"https://huggingface.co/datasets/{self.repo}/resolve/main"


# The pre-shuffled shard sets nanochat trains on (~100 MB of zstd parquet each).
DATASETS = {
    "fineweb-edu": ShardSet(repo="karpathy/fineweb-edu-100b-shuffle", max_shard=1822),
    "climbmix": ShardSet(repo="karpathy/climbmix-400b-shuffle", max_shard=6542),
}


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.parquet"


def _parquets(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.parquet") if p.is_file())


def find_shards(data_dir: Path) -> tuple[list[Path], list[Path]]:
    """(train files, val files) of a data directory.

    `train_*.parquet` + `val.parquet` when both are there; otherwise every `*.parquet`, the
    last in sorted order being the val shard. A directory without parquet files but with an
    `enwiki/` folder is read through that folder.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"nanochat data directory {data_dir} does not exist")
    files = _parquets(data_dir)
    if not files and (data_dir / "enwiki").is_dir():
        data_dir = data_dir / "enwiki"
        files = _parquets(data_dir)
    train = [p for p in files if p.name.startswith("train_")]
    val = data_dir / "val.parquet"
    if train and val in files:
        return train, [val]
    if len(files) >= 2:
        return files[:-1], files[-1:]
    found = f"only {files[0].name}" if files else "none"
    raise FileNotFoundError(
        f"no nanochat data under {data_dir}: looked for train_*.parquet + val.parquet, or at "
        f"least two *.parquet shards (the last one is the val shard), or an enwiki/ folder "
        f"holding them; found {found}"
    )


def doc_key(text: str) -> str:
    """The key of a document without an `id` column: a hash of its text."""
    return "h" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def iter_texts(files: Iterable[Path], *, max_docs: int | None = None) -> Iterator[tuple[str, str]]:
    """(document key, text) for every non-empty `text` of the files, in file order, reading one
    row group at a time so that memory stays bounded; at most `max_docs` documents."""
    import pyarrow.parquet as pq

    n = 0
    for path in files:
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        if "text" not in names:
            raise ValueError(f"{path} has no 'text' column (columns: {names})")
        columns = ["text", "id"] if "id" in names else ["text"]
        for group in range(pf.num_row_groups):
            table = pf.read_row_group(group, columns=columns)
            texts = table.column("text").to_pylist()
            ids = table.column("id").to_pylist() if "id" in columns else [None] * len(texts)
            del table
            for doc_id, text in zip(ids, texts, strict=True):
                if not text:
                    continue
                if max_docs is not None and n >= max_docs:
                    return
                yield (doc_key(text) if doc_id is None else str(doc_id)), text
                n += 1


def source_files(data_dir: Path) -> list[dict[str, object]]:
    """Name, role and size of every source file: what meta.json records about the sources."""
    train, val = find_shards(data_dir)
    return [{"name": p.name, "split": split, "bytes": p.stat().st_size}
            for split, files in (("train", train), ("val", val)) for p in files]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Public shards, for machines that are online


def has_parquet_footer(path: Path) -> bool:
    """A complete parquet file starts and ends with PAR1 (a cut-off download does not)."""
    try:
        size = path.stat().st_size
        if size < 12:
            return False
        with path.open("rb") as f:
            head = f.read(4)
            f.seek(size - 4)
            return head == PARQUET_MAGIC and f.read(4) == PARQUET_MAGIC
    except OSError:
        return False


def val_shard(dataset: str) -> int:
    return _shard_set(dataset).max_shard


def _shard_set(dataset: str) -> ShardSet:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {sorted(DATASETS)}")
    return DATASETS[dataset]


def _fetch(url: str, tmp: Path, timeout_s: float) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "autolab-nanochat"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response, tmp.open("wb") as f:
        while chunk := response.read(1 << 20):
            f.write(chunk)


def download_shards(
    dataset: str,
    indices: Iterable[int],
    dest: Path,
    *,
    base_url: str | None = None,
    retries: int = 5,
    backoff_s: float = 2.0,
    timeout_s: float = 60.0,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Download shards `shard_{i:05d}.parquet` of a public shard set into `dest`.

    A file already there with a parquet footer is kept. Each download goes to a temporary
    file that is renamed into place only once complete (footer checked), so an interrupted
    run never leaves a partial shard. Failed attempts are retried `retries` times in all,
    waiting backoff_s * 2**k between them; then the error is raised. `base_url` replaces the
    dataset's address (a mirror). Returns the shards' paths in the order asked.
    """
    shards = _shard_set(dataset)
    base = (base_url or shards.base_url).rstrip("/")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in indices:
        if not 0 <= index <= shards.max_shard:
            raise ValueError(f"{dataset} has shards 0..{shards.max_shard}, not {index}")
        path = dest / shard_name(index)
        paths.append(path)
        if has_parquet_footer(path):
            continue
        url = f"{base}/{path.name}"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        for attempt in range(1, retries + 1):
            try:
                _fetch(url, tmp, timeout_s)
                if not has_parquet_footer(tmp):
                    raise OSError(f"{url}: incomplete download (no parquet footer)")
                tmp.replace(path)
                log(f"downloaded {path.name} ({path.stat().st_size / 1e6:.1f} MB)")
                break
            except (OSError, http.client.HTTPException) as e:  # URLError, timeouts included
                tmp.unlink(missing_ok=True)
                if attempt == retries:
                    raise OSError(f"{url}: failed after {retries} attempts: {e}") from e
                wait = backoff_s * 2 ** (attempt - 1)
                log(f"{path.name}: attempt {attempt}/{retries} failed ({e}); retry in {wait:g} s")
                time.sleep(wait)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Download public nanochat shards: 0..n-1 for training plus the pinned "
                    "validation shard (the dataset's last), which sorts last in DEST.")
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("n_train", type=int, help="number of training shards")
    parser.add_argument("dest", type=Path)
    args = parser.parse_args(argv)
    indices = sorted({*range(args.n_train), val_shard(args.dataset)})
    paths = download_shards(args.dataset, indices, args.dest)
    print(f"{len(paths)} shards in {args.dest}")


if __name__ == "__main__":
    main()
