#!/usr/bin/env bash
# Staging and measuring nanochat on an offline GPU host, from the repository root there.
#
# Data and wheels travel in pieces (a transfer may be size-limited): each piece is put
# in .stage/ and `stage` moves it to $STAGE, which outlives the repository copy. Then:
#   perf/nanochat_gpu.sh setup            # bubblewrap from its .deb if missing, wheels into
#                                         # $SITE, the prepared data into artifacts/
#   perf/nanochat_gpu.sh seeds OUT VARIANT N BUDGET   # perf/nanochat_seeds.py there
# The prepared data come from `autolab prepare nanochat` on any machine (train.bin split
# and xz-compressed as train.bin.partN.xz; the small files as they are). Carry wheels only
# for what the host lacks (for perf/nanochat_seeds.py: pydantic, pydantic-core,
# annotated-types, typing-inspection): $SITE is on the parent's path but not on the
# trials', so a second copy of a package the host has (typing-extensions, say) makes the
# parent and the sandboxed steps disagree about where it lives.
set -euo pipefail
STAGE=${STAGE:-/root/stage}
SITE=${SITE:-/root/site}
DATA=artifacts/nanochat/data
cmd=${1:?usage: nanochat_gpu.sh stage|setup|seeds ...}; shift

env_line() {
  export PATH="/root/bwrap/usr/bin:$PATH" PYTHONPATH="$PWD:$SITE" PYTHONUNBUFFERED=1
  export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 MLFLOW_DISABLE_TELEMETRY=true
}

case "$cmd" in
  stage)
    mkdir -p "$STAGE" && mv "${1:-.stage}"/* "$STAGE"/ && ls -la "$STAGE" ;;
  setup)
    if ! command -v bwrap >/dev/null && [ ! -x /root/bwrap/usr/bin/bwrap ]; then
      dpkg -x "$STAGE"/bubblewrap_*.deb /root/bwrap
    fi
    if ls "$STAGE"/*.whl >/dev/null 2>&1; then
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "$STAGE"/*.whl
    fi
    mkdir -p "$DATA"
    for f in meta.json tokenizer.json tokenizer_meta.json token_bytes.npy val.bin test.bin; do
      cp "$STAGE/$f" "$DATA/$f"
    done
    python3 - "$STAGE" "$DATA" <<'PY'
import hashlib, json, lzma, sys
from pathlib import Path
stage, data = Path(sys.argv[1]), Path(sys.argv[2])
parts = sorted(stage.glob("train.bin.part*.xz"))
with open(data / "train.bin.tmp", "wb") as out:
    for p in parts:
        out.write(lzma.decompress(p.read_bytes()))
meta = json.loads((data / "meta.json").read_text())
digest = hashlib.sha256((data / "train.bin.tmp").read_bytes()).hexdigest()
want = meta["splits"]["train"]["sha256"]
assert digest == want, f"train.bin sha256 {digest} != {want} ({len(parts)} parts)"
(data / "train.bin.tmp").rename(data / "train.bin")
print("train.bin ok", (data / "train.bin").stat().st_size, "bytes from", len(parts), "parts")
PY
    env_line
    bwrap --version; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    python3 -c "import torch, pydantic; print('torch', torch.__version__, torch.cuda.is_available(), 'pydantic', pydantic.VERSION)"
    python3 -c "from autolab.sandbox import available_modes; print('sandbox modes', available_modes())" ;;
  seeds)
    env_line
    out=$1 variant=$2 n=$3 budget=$4; shift 4
    python3 perf/nanochat_seeds.py --variant "$variant" --seeds "$n" --budget "$budget" \
      --work /root/trials --cache /root/trials/cache --out "$out" "$@" ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
