#!/usr/bin/env bash
# Installs autolab on a host with no network access, from a wheelhouse that
# `make wheelhouse` built on a machine with one (see README, "Running on a GPU box").
#
# The host keeps its own torch (a CUDA build): the virtualenv is made with
# --system-site-packages from the interpreter that has it, nothing here installs torch,
# and pip never reaches an index (--no-index; only the wheelhouse's files are used).
# Where that interpreter is itself a virtualenv, whose packages --system-site-packages
# does not reach, a .pth file adds its site-packages after the new virtualenv's own.
#
# Settings (environment):
#   HOST_PYTHON  the interpreter with the host's torch (default: the one $VENV was made
#                from, else python3)
#   VENV         the virtualenv (.venv, the one `make run` and `make test` use)
#   WHEELHOUSE   where `make wheelhouse` wrote (wheelhouse)
#   EDITABLE     1: autolab from this source tree, as `make setup` installs it;
#                0: from the wheel in the wheelhouse
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
HOST_PYTHON=${HOST_PYTHON:-$(cat "$VENV/.offline" 2>/dev/null || true)}
HOST_PYTHON=${HOST_PYTHON:-python3}
WHEELHOUSE=${WHEELHOUSE:-wheelhouse}
EDITABLE=${EDITABLE:-1}
export PIP_DISABLE_PIP_VERSION_CHECK=1

say() { echo "install-offline: $*"; }
die() { echo "install-offline: error: $*" >&2; exit 1; }

lock=$WHEELHOUSE/requirements.txt
[ -f "$lock" ] || die "no $lock: build it with 'make wheelhouse' on a machine with \
network access and the host's Python version, then copy $WHEELHOUSE/ here"

host_torch=$("$HOST_PYTHON" -c 'import torch; print(torch.__version__)') ||
  die "$HOST_PYTHON cannot import torch: set HOST_PYTHON to the interpreter that has \
the host's torch"
host_py=$("$HOST_PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
want_py=$(sed -n 's/^# target: CPython \([0-9][0-9.]*\),.*/\1/p' "$lock")
[ -z "$want_py" ] || [ "$want_py" = "$host_py" ] ||
  die "$WHEELHOUSE was built for Python $want_py and $HOST_PYTHON is $host_py: \
build it again with 'make wheelhouse WHEEL_PY=$host_py'"
say "host: Python $host_py ($(command -v "$HOST_PYTHON")), torch $host_torch"

# -- the virtualenv -------------------------------------------------------------------
if [ -e "$VENV" ] && [ ! -f "$VENV/.offline" ]; then
  die "$VENV exists and was not made by install-offline (it may hold a torch of its own, \
which would hide the host's); remove it first: rm -rf $VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV (--system-site-packages)"
  "$HOST_PYTHON" -m venv --system-site-packages "$VENV" 2>/dev/null || {
    say "no ensurepip here: creating $VENV without pip; the host's pip installs into it"
    rm -rf "$VENV"
    "$HOST_PYTHON" -m venv --system-site-packages --without-pip "$VENV"
  }
fi
command -v "$HOST_PYTHON" >"$VENV/.offline"

# The host interpreter's package folders that the virtualenv does not see yet.
site_dirs='import sys; print("\n".join(p for p in sys.path
  if p.rstrip("/").endswith(("site-packages", "dist-packages"))))'
pth=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
pth=$pth/00-host-site-packages.pth
rm -f "$pth"
missing=$(comm -23 <("$HOST_PYTHON" -c "$site_dirs" | sort -u) \
                   <("$VENV/bin/python" -c "$site_dirs" | sort -u))
if [ -n "$missing" ]; then
  say "$HOST_PYTHON is a virtualenv: adding its packages through $pth"
  while IFS= read -r dir; do
    printf 'import site; site.addsitedir(%s)\n' "$("$VENV/bin/python" -c \
      'import sys; print(repr(sys.argv[1]))' "$dir")"
  done <<<"$missing" >"$pth"
fi

if "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
  pip=("$VENV/bin/python" -m pip)
else
  pip=("$HOST_PYTHON" -m pip --python "$VENV/bin/python")
fi
offline=(--no-index --find-links "$WHEELHOUSE" --no-deps)

# -- packages -------------------------------------------------------------------------
say "installing $(grep -c '^[^#]' "$lock") wheels from $WHEELHOUSE (no index, hashes checked)"
"${pip[@]}" install -q "${offline[@]}" --require-hashes -r "$lock"
if [ "$EDITABLE" = 1 ]; then
  say "installing autolab from this source tree (editable; its build backend from $WHEELHOUSE)"
  "${pip[@]}" install -q "${offline[@]}" -e .
else
  wheel=$(ls "$WHEELHOUSE"/autolab-*.whl 2>/dev/null | head -n 1)
  [ -n "$wheel" ] || die "no autolab wheel in $WHEELHOUSE"
  say "installing autolab from $wheel"
  "${pip[@]}" install -q "${offline[@]}" --force-reinstall "$wheel"
fi

# -- checks ---------------------------------------------------------------------------
"$VENV/bin/python" - "$host_torch" "$VENV" <<'EOF' || die "the virtualenv does not use the host's torch"
import os
import sys

import torch

want, venv = sys.argv[1], os.path.realpath(sys.argv[2])
where = os.path.dirname(os.path.realpath(torch.__file__))
cuda = torch.cuda.is_available()
devices = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
print(f"install-offline: torch {torch.__version__} from {where}; "
      f"CUDA available: {cuda}" + (f" ({devices})" if cuda else " (CPU only)"))
if torch.__version__ != want or where.startswith(venv + os.sep):
    sys.exit(f"install-offline: expected the host's torch {want}, not one in {venv}")
EOF

# Every requirement of what was installed must be met, by the wheelhouse or the host;
# what the wheelhouse leaves out on purpose (its profile) is only reported.
"${pip[@]}" check >"$VENV/.pip-check" 2>&1 || true
"$VENV/bin/python" - "$lock" "$VENV/.pip-check" <<'EOF' || die "requirements not met (above): \
build the wheelhouse again with HOST_PACKAGES set to this host's 'pip list --format=freeze', \
or without the SKIP entries named"
import re
import sys

def key(name):
    return re.sub(r"[-_.]+", "-", name).lower()

lock = open(sys.argv[1]).read()
ours = {key(m) for m in re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", lock, re.M)}
ours.add("autolab")
left_out = re.search(r"^# left out \(not needed at run time\): (.*)$", lock, re.M)
left_out = {key(n) for n in re.split(r"[,\s]+", left_out.group(1)) if n and n != "none"}
bad = []
for line in open(sys.argv[2]).read().splitlines():
    m = re.match(r"(\S+) \S+ (?:requires|has requirement) ([A-Za-z0-9._-]+)", line)
    if not m:
        continue
    who, what = key(m.group(1)), key(m.group(2))
    if who in ours and what not in left_out:
        bad.append(line)
    else:
        print(f"install-offline: note: {line}")
for line in bad:
    print(f"install-offline: {line}", file=sys.stderr)
sys.exit(1 if bad else 0)
EOF

"$VENV/bin/autolab" --help >"$VENV/.autolab-help" 2>&1 || {
  cat "$VENV/.autolab-help" >&2; die "autolab --help failed"; }
say "autolab --help: ok"
touch "$VENV/.installed"
say "done: make run and the other targets use $VENV as it is and fetch nothing"
