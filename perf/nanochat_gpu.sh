#!/usr/bin/env bash
# Staging and measuring nanochat on an offline GPU host, from the repository root there.
#
# Data and wheels travel in pieces (a transfer may be size-limited): each piece is put
# in a folder of the repository (.stage/, .stage2/, ...) and `stage DIR` merges it into
# $STAGE, which outlives the repository copy. Then:
#   perf/nanochat_gpu.sh setup            # bubblewrap from its .deb if missing, wheels into
#                                         # $SITE, the prepared data into artifacts/
#   perf/nanochat_gpu.sh seeds OUT VARIANT N BUDGET   # perf/nanochat_seeds.py there
#   perf/nanochat_gpu.sh install          # make install-offline from $STAGE/wheelhouse
#   perf/nanochat_gpu.sh campaign-start PARAMS [STATE.tgz]   # autolab run in the background,
#                                         # detached, from a frozen copy of the code in $SRC
#                                         # ($SRC_TAR: a `git archive` of the commit to run);
#                                         # STATE.tgz: what `collect` packed, to resume;
#                                         # RUN_ARGS: more for autolab run (--no-confirm);
#                                         # EARLIER: packed archives of earlier campaigns
#                                         # (campaign.learn_from), unpacked under runs/
#   perf/nanochat_gpu.sh campaign-wait SECONDS [PARAMS DEST]   # wait (while it runs), show
#                                         # its progress; with DEST, then `snapshot`
#   perf/nanochat_gpu.sh snapshot PARAMS DEST    # the running campaign's state as
#                                         # DEST/state-NAME.tgz, campaign-start's STATE.tgz
#                                         # (with what prepare measured: artifacts/**/
#                                         # baseline.json, e.g. a solexec member's T_b)
#   perf/nanochat_gpu.sh campaign-stop    # interrupt it; what finished is in the archive
#   perf/nanochat_gpu.sh collect PARAMS DEST     # archive, MLflow store and report to DEST
#   NAME=other ...                        # campaign-start and collect: that campaign name
#                                         # instead of PARAMS's (same settings otherwise)
# The prepared data come from `autolab prepare nanochat` on any machine (train.bin split
# and xz-compressed as train.bin.partN.xz; the small files as they are); the wheelhouse
# from `make wheelhouse WHEEL_PROFILE=run HOST_PACKAGES=<the host's pip freeze>` (the GPU
# image's, as read on 2026-11-23: perf/host-packages-cuda-image.txt). For
# perf/nanochat_seeds.py alone carry only what the host lacks (pydantic, pydantic-core,
# annotated-types, typing-inspection) as top-level wheels: $SITE is on the parent's path.
# Other benchmarks' token files stage the same way into their own folders, e.g. for the
# speedrun: STAGE=/root/stage-sr DATA=artifacts/speedrun/data perf/nanochat_gpu.sh setup
set -euo pipefail
STAGE=${STAGE:-/root/stage}
SITE=${SITE:-/root/site}
SRC=${SRC:-/root/src}
DATA=${DATA:-artifacts/nanochat/data}
cmd=${1:?usage: nanochat_gpu.sh stage|setup|seeds ...}; shift

env_line() {
  export PATH="/root/bwrap/usr/bin:$PATH" PYTHONPATH="$PWD:$SITE" PYTHONUNBUFFERED=1
  export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 MLFLOW_DISABLE_TELEMETRY=true
}

# The campaign runs from its own copy of the code: a later change to this tree (a new
# transfer of it) must not reach a running campaign, whose trusted files are hashed.
freeze() {
  rm -rf "$SRC" && mkdir -p "$SRC"
  if [ -n "${SRC_TAR:-}" ]; then
    tar -xf "$SRC_TAR" -C "$SRC"
  else
    tar --exclude=./.venv --exclude=./.git --exclude=./runs --exclude=./mlruns \
      --exclude=./reports --exclude=./artifacts --exclude='./.stage*' -cf - . | tar -xf - -C "$SRC"
  fi
  ln -s "$PWD/.venv" "$SRC/.venv" && ln -s "$PWD/artifacts" "$SRC/artifacts"
}

case "$cmd" in
  stage)
    mkdir -p "$STAGE" && cp -a "${1:-.stage}"/. "$STAGE"/ && du -sh "$STAGE" ;;
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
      if [ -f "$STAGE/$f" ]; then cp "$STAGE/$f" "$DATA/$f"; fi
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
    python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"
    # the host's python has autolab's needs only where top-level wheels were staged
    # (perf/nanochat_seeds.py); `install` makes the virtualenv that campaigns use
    python3 -c "from autolab.sandbox import available_modes; print('sandbox modes', available_modes())" \
      2>/dev/null || echo "host python: no autolab dependencies (install makes .venv)" ;;
  seeds)
    env_line
    out=$1 variant=$2 n=$3 budget=$4; shift 4
    python3 perf/nanochat_seeds.py --variant "$variant" --seeds "$n" --budget "$budget" \
      --work /root/trials --cache /root/trials/cache --out "$out" "$@" ;;
  install)
    make install-offline HOST_PYTHON="$(command -v python3)" WHEELHOUSE="$STAGE/wheelhouse"
    env_line
    export PYTHONPATH="$PWD"
    .venv/bin/python -c "from autolab.sandbox import linked_site_dirs as l; print(l(('torch',)))" ;;
  campaign-start)
    freeze
    for t in ${EARLIER:-}; do tar -xzf "$t" -C "$SRC" runs; done
    if [ -n "${2:-}" ]; then  # artifacts/ is the host's prepared data: measured T_b into it
      tar -xzf "$2" -C "$SRC" --exclude=artifacts
      tar -xzf "$2" -C "$PWD" artifacts 2>/dev/null || true
    fi
    cd "$SRC"
    env_line
    export PYTHONPATH="$PWD"
    for d in runs/*/archive; do  # earlier campaigns kept in the file layout: into SQLite
      if [ -f "$d/campaign.json" ] && [ ! -f "$d/archive.db" ]; then
        .venv/bin/autolab archive migrate --params "$1" --name "$(basename "$(dirname "$d")")" | tail -1
      fi
    done
    setsid nohup .venv/bin/autolab run --params "$1" ${NAME:+--name "$NAME"} ${RUN_ARGS:-} \
      >>/root/campaign.log 2>&1 </dev/null &
    echo $! >/root/campaign.pid; sleep 5; tail -5 /root/campaign.log ;;
  campaign-wait)
    end=$((SECONDS + $1))
    while [ $SECONDS -lt $end ] && kill -0 "$(cat /root/campaign.pid)" 2>/dev/null; do sleep 5; done
    kill -0 "$(cat /root/campaign.pid)" 2>/dev/null && echo "campaign: running" || echo "campaign: exited"
    grep -v "^\s*$" /root/campaign.log | grep -iv "warn" | tail -25
    if [ -n "${3:-}" ]; then "$0" snapshot "$2" "$3"; fi ;;
  snapshot)
    # a consistent copy of the running campaign's state (SQLite's online backup of the
    # archive and the MLflow store), packed as campaign-start's STATE.tgz: a machine lost
    # between calls loses no more than the trials since the last snapshot
    cd "$SRC"
    env_line
    name=${NAME:-$(PYTHONPATH=$PWD .venv/bin/python -c "from autolab.config import load_params as l; print(l('$1').campaign.name)")}
    tmp=$(mktemp -d)
    mkdir -p "$2" "$tmp/mlruns" "$tmp/reports"
    for d in runs/*/archive; do  # this campaign's, and the earlier ones it learns from
      mkdir -p "$tmp/$(dirname "$d")"; cp -a "$d" "$tmp/$(dirname "$d")/"
    done
    if [ -d mlruns ]; then cp -a mlruns/. "$tmp/mlruns/"; fi
    if [ -d reports ]; then cp -a reports/. "$tmp/reports/"; fi
    mkdir -p "$tmp/artifacts"  # what prepare measured on this machine (a family member's T_b)
    find -L artifacts -name baseline.json 2>/dev/null | while read -r f; do
      mkdir -p "$tmp/$(dirname "$f")"; cp "$f" "$tmp/$f"; done
    python3 - "$tmp" <<'PY'
import sqlite3, sys
from pathlib import Path
for copy in Path(sys.argv[1]).rglob("*.db"):
    live = Path.cwd() / copy.relative_to(sys.argv[1])
    for extra in (".db-wal", ".db-shm"):
        copy.with_suffix(extra).unlink(missing_ok=True)
    copy.unlink()
    src, dst = sqlite3.connect(live), sqlite3.connect(copy)
    src.backup(dst)
    dst.close(), src.close()
PY
    tar -czf "$2/state-$name.tgz" -C "$tmp" runs mlruns reports artifacts
    rm -rf "$tmp"
    ls -la "$2/state-$name.tgz" ;;
  campaign-stop)
    pid=$(cat /root/campaign.pid)
    kill -INT -- "-$pid" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -KILL -- "-$pid" 2>/dev/null || true; tail -5 /root/campaign.log ;;
  collect)
    cd "$SRC"
    env_line
    export PYTHONPATH="$PWD"
    name=${NAME:-$(.venv/bin/python -c "from autolab.config import load_params as l; print(l('$1').campaign.name)")}
    mkdir -p "$2"
    .venv/bin/autolab report --params "$1" --name "$name" || true
    .venv/bin/autolab status --params "$1" --name "$name" >"$2/status-$name.txt" 2>&1 || true
    tar -czf "$2/campaign-$name.tgz" "runs/$name/archive" mlruns reports /root/campaign.log
    ls -la "$2" ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
