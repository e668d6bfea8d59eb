#!/usr/bin/env python3
"""Build a wheelhouse for installing autolab on a host with no network access.

Run it on a machine that can reach a package index (`make wheelhouse`). It writes to
the wheelhouse folder (default `wheelhouse/`):

- wheels of autolab's dependencies and everything they require, for the target
  interpreter and platform (`--python-version`, `--platform`), not the running one;
- autolab's own wheel and the wheels of its build backend (an editable install on the
  host builds from the source tree, with no network);
- `requirements.txt`: the lock, one `name==version --hash=sha256:...` line per runtime
  wheel, with a header saying what the host must provide itself.

torch, and the NVIDIA, CUDA and Triton wheels that come with it, are never fetched: the
host keeps its own CUDA build. The resolver is given a stub `torch` wheel (no files, no
dependencies, a `+host` local version no index carries), so nothing of the real torch is
looked at, not even its metadata; everything else is resolved for real, with pip.

pip evaluates environment markers (`; python_version < "3.12"`) for the interpreter that
runs it, whatever `--python-version` says. So the dependency graph is walked again here
from pip's report, with markers evaluated for the target; a requirement that only the
target needs is added as a root and everything is resolved again.

Distributions the host already has can be left out, two ways:
- `--skip NAME[==VERSION]`: left out, and everything reached only through it; a version
  given is also a constraint of the resolution.
- `--host-packages FILE`: the host's `python3 -m pip list --format=freeze`. A
  distribution listed there is left out where the host's version meets every requirement
  on it in the resolved set; otherwise the resolved version is shipped, and installed in
  the virtualenv over the host's.
`--profile run` leaves out what only development needs: the `dev` extra and DVC (used to
version data and pipelines with `dvc repro`, never by `autolab run`).
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections import defaultdict
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.utils import canonicalize_name
    from packaging.version import Version
except ImportError:  # pip always carries its own copy
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.specifiers import SpecifierSet
    from pip._vendor.packaging.utils import canonicalize_name
    from pip._vendor.packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent

# Provided by the host, never shipped: torch and what a CUDA torch pulls in.
HOST_PROVIDED = re.compile(
    r"^(torch|torchvision|torchaudio|triton|pytorch-triton(-.*)?|nvidia-.*|cuda-.*)$")
STUB_TORCH = "2.11.0+host"

PROFILES = {
    "full": {"extras": ["dev"], "omit": []},
    "run": {"extras": [], "omit": ["dvc"]},
}


def log(msg: str) -> None:
    print(f"wheelhouse: {msg}", flush=True)


def fail(msg: str) -> None:
    sys.exit(f"wheelhouse: error: {msg}")


def pip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Runs pip quietly; its output is shown only where it fails."""
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    proc = subprocess.run(cmd, text=True, capture_output=True)
    if proc.returncode != 0 and check:
        sys.stderr.write(proc.stdout + proc.stderr)
        fail(f"pip {args[0]} failed (exit {proc.returncode})")
    return proc


def default_platforms(arch: str, glibc_max: int) -> list[str]:
    """pip matches platform tags exactly, so every manylinux level up to glibc_max."""
    tags = [f"manylinux_2_{n}_{arch}" for n in range(glibc_max, 16, -1)]
    return tags + [f"manylinux2014_{arch}", f"manylinux2010_{arch}", f"manylinux1_{arch}"]


def target_environment(py: str, platforms: list[str]) -> dict[str, str]:
    """Marker environment of the target interpreter, for linux, macOS or Windows tags."""
    parts = (py.split(".") if "." in py else [py[0], py[1:]]) + ["0"]
    full = ".".join(parts[:3])
    tag = platforms[0]
    if tag.startswith(("manylinux", "musllinux", "linux")):
        system, sys_platform, os_name = "Linux", "linux", "posix"
        machine = re.sub(r"^(manylinux_\d+_\d+|musllinux_\d+_\d+|manylinux\d+|linux)_", "", tag)
    elif tag.startswith("macosx"):
        system, sys_platform, os_name = "Darwin", "darwin", "posix"
        machine = tag.rsplit("_", 1)[-1]
    else:
        system, sys_platform, os_name = "Windows", "win32", "nt"
        machine = "AMD64" if tag.endswith("amd64") else tag.rsplit("_", 1)[-1]
    return {
        "python_version": ".".join(parts[:2]), "python_full_version": full,
        "implementation_name": "cpython", "implementation_version": full,
        "platform_python_implementation": "CPython", "os_name": os_name,
        "sys_platform": sys_platform, "platform_system": system, "platform_machine": machine,
        "platform_release": "", "platform_version": "",
    }


def stub_wheel(folder: Path, name: str, version: str) -> None:
    """An empty distribution that satisfies `name` for the resolver."""
    dist = f"{name}-{version}"
    with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w") as z:
        z.writestr(f"{dist}.dist-info/METADATA",
                   f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        z.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: autolab\n"
                   "Root-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{dist}.dist-info/RECORD", "")


def build_requires() -> list[str]:
    text = (ROOT / "pyproject.toml").read_text()
    try:
        import tomllib
        return tomllib.loads(text)["build-system"]["requires"]
    except ImportError:
        m = re.search(r"\[build-system\][^\[]*?requires\s*=\s*\[([^\]]*)\]", text, re.S)
        return re.findall(r"[\"']([^\"']+)[\"']", m.group(1)) if m else ["setuptools"]


def source_copy(tmp: Path) -> Path:
    """The project's packaged files, copied: a build in the tree itself would reuse (and
    race on) its build/ folder, and could pack files deleted since."""
    text = (ROOT / "pyproject.toml").read_text()
    try:
        import tomllib
        patterns = tomllib.loads(text)["tool"]["setuptools"]["packages"]["find"]["include"]
    except ImportError:
        found = re.search(r"^include\s*=\s*\[([^\]]*)\]", text, re.M)
        patterns = re.findall(r"[\"']([^\"']+)[\"']", found.group(1))
    src = tmp / "src"
    src.mkdir()
    for f in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / f).is_file():
            shutil.copy2(ROOT / f, src / f)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for d in sorted(ROOT.iterdir()):
        if d.is_dir() and any(fnmatch.fnmatch(d.name, p) for p in patterns):
            shutil.copytree(d, src / d.name, ignore=skip)
    return src


def read_host_packages(path: Path) -> dict[str, Version]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "-")) or "==" not in line or " @ " in line:
            continue
        name, _, version = line.partition("==")
        try:
            out[canonicalize_name(name)] = Version(version.split(";")[0].strip())
        except ValueError:
            continue
    return out


class Graph:
    """pip's resolved set, walked again with the target's markers."""

    def __init__(self, report: dict, env: dict[str, str]):
        self.env = env
        self.items = {canonicalize_name(i["metadata"]["name"]): i for i in report["install"]}

    def walk(self, roots: list[tuple[str, str]], prune: set[str], skip: set[str]):
        """Distributions reached from roots (name, extra). Names in prune are not entered;
        names in skip are not entered either, but extras asked of them are."""
        nodes: set[str] = set()
        specs: dict[str, list[SpecifierSet]] = defaultdict(list)
        missing: dict[str, Requirement] = {}
        pruned: dict[str, list[SpecifierSet]] = defaultdict(list)
        seen: set[tuple[str, str]] = set()
        work = list(roots)
        while work:
            name, extra = work.pop()
            if (name, extra) in seen:
                continue
            seen.add((name, extra))
            if name in prune or HOST_PROVIDED.match(name):
                continue
            if name in skip and not extra:
                continue
            item = self.items.get(name)
            if item is None:
                continue
            if name not in skip:
                nodes.add(name)
            for text in item["metadata"].get("requires_dist") or []:
                req = Requirement(text)
                if req.marker is not None:
                    if not req.marker.evaluate({**self.env, "extra": extra}):
                        continue
                    if name in skip and req.marker.evaluate({**self.env, "extra": ""}):
                        continue  # base requirement of a skipped one: the host has it
                elif name in skip:
                    continue
                dep = canonicalize_name(req.name)
                specs[dep].append(req.specifier)
                if dep in prune or HOST_PROVIDED.match(dep):
                    pruned[dep].append(req.specifier)
                elif dep not in self.items:
                    missing[dep] = req
                work.append((dep, ""))
                work += [(dep, canonicalize_name(e)) for e in req.extras]
        return nodes, specs, missing, pruned


def resolve(args, roots: list[str], constraints: list[str], tmp: Path,
            check: bool = True) -> dict | None:
    cfile = tmp / "constraints.txt"
    cfile.write_text("".join(c + "\n" for c in constraints))
    report = tmp / "report.json"
    report.unlink(missing_ok=True)
    # --target makes platform options legal for `pip install` (older pips want it even
    # with --dry-run); nothing is installed.
    proc = pip("install", "--dry-run", "--report", str(report), "--target", str(tmp / "t"),
               "--only-binary=:all:", "--python-version", args.python_version,
               "--implementation", "cp", *[f"--platform={p}" for p in args.platforms],
               *local_links(tmp), "-c", str(cfile), *roots, check=check)
    return json.loads(report.read_text()) if proc.returncode == 0 else None


def local_links(tmp: Path) -> list[str]:
    return [a for d in ("stub", "built") for a in ("--find-links", str(tmp / d))]


def build_sdist_only(roots: list[str], constraints: list[str], tmp: Path) -> list[str]:
    """Wheels for the pure-Python dependencies published as source only (pip cannot
    resolve those for another interpreter). Found by resolving for this interpreter with
    sources allowed; each is built here, and must come out as a `none-any` wheel."""
    report = tmp / "sources.json"
    pip("install", "--dry-run", "--ignore-installed", "--report", str(report),
        *local_links(tmp), "-c", str(tmp / "constraints.txt"), *roots)
    built = []
    for item in json.loads(report.read_text())["install"]:
        if item["download_info"]["url"].split("#")[0].endswith(".whl"):
            continue
        pin = f"{item['metadata']['name']}=={item['metadata']['version']}"
        log(f"building a wheel of {pin} (published as source only)")
        pip("wheel", "--no-deps", "--wheel-dir", str(tmp / "built"), pin)
        built.append(pin)
    native = [w.name for w in (tmp / "built").glob("*.whl") if not w.name.endswith("-any.whl")]
    if native:
        fail(f"published as source only and not pure Python, so they cannot be built for "
             f"another interpreter here: {native}; build them on a machine like the host")
    return built


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def wheel_name(path: Path) -> str:
    return canonicalize_name(path.name.split("-")[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dest", type=Path, default=ROOT / "wheelhouse")
    ap.add_argument("--python-version", default="3.12")
    ap.add_argument("--platform", dest="platforms", action="append", default=[],
                    help="wheel platform tag, repeatable (default: manylinux x86_64 tags "
                         "up to glibc 2.28)")
    ap.add_argument("--profile", choices=sorted(PROFILES), default="full")
    ap.add_argument("--extras", help="autolab extras, comma-separated (default: the "
                                     "profile's)")
    ap.add_argument("--omit", action="append", default=None,
                    help="distribution to leave out with what only it needs (default: the "
                         "profile's)")
    ap.add_argument("--skip", action="append", default=[],
                    help="NAME or NAME==VERSION the host already has; repeatable, or "
                         "several separated by spaces or commas")
    ap.add_argument("--host-packages", type=Path,
                    help="the host's `python3 -m pip list --format=freeze`")
    args = ap.parse_args()

    profile = PROFILES[args.profile]
    extras = profile["extras"] if args.extras is None else \
        [e for e in re.split(r"[\s,]+", args.extras) if e]
    omit = {canonicalize_name(n) for n in (profile["omit"] if args.omit is None else
            [w for o in args.omit for w in re.split(r"[\s,]+", o) if w])}
    skip_specs = [w for s in args.skip for w in re.split(r"[\s,]+", s) if w]
    skip = {canonicalize_name(Requirement(s).name) for s in skip_specs}
    skip_pins = [s for s in skip_specs if "==" in s]
    host = read_host_packages(args.host_packages) if args.host_packages else {}
    platforms = args.platforms = [w for p in args.platforms for w in p.split() if w] or \
        default_platforms("x86_64", 28)
    env = target_environment(args.python_version, platforms)
    dest = args.dest.resolve()

    log(f"target: CPython {env['python_full_version']}, {len(platforms)} platform tags "
        f"({platforms[0]} ...); profile {args.profile}, extras {extras or 'none'}, "
        f"omitted {sorted(omit) or 'none'}")
    dest.mkdir(parents=True, exist_ok=True)
    for old in [*dest.glob("*.whl"), dest / "requirements.txt"]:
        old.unlink(missing_ok=True)

    with tempfile.TemporaryDirectory(prefix="wheelhouse-") as t:
        tmp = Path(t)
        (tmp / "stub").mkdir()
        (tmp / "built").mkdir()
        stub_wheel(tmp / "stub", "torch", STUB_TORCH)

        log("building the autolab wheel")
        pip("wheel", "--no-deps", "--wheel-dir", str(tmp / "own"), str(source_copy(tmp)))
        own = next((tmp / "own").glob("autolab-*.whl"))
        shutil.copy2(own, dest / own.name)

        build = build_requires()
        extra_txt = f"[{','.join(extras)}]" if extras else ""
        roots = [f"autolab{extra_txt} @ {own.as_uri()}", *build]
        constraints = [f"torch=={STUB_TORCH}", *skip_pins]
        root_nodes = [("autolab", "")] + [("autolab", canonicalize_name(e)) for e in extras]
        build_names = {canonicalize_name(Requirement(b).name) for b in build}
        root_nodes += [(b, "") for b in build_names]

        for attempt in range(4):
            log("resolving" + (" again, with what only the target needs" if attempt else ""))
            report = resolve(args, roots, constraints, tmp, check=False)
            if report is None:
                if not build_sdist_only(roots, constraints, tmp):
                    resolve(args, roots, constraints, tmp)  # shows pip's reasons
                log("resolving again, with those wheels")
                report = resolve(args, roots, constraints, tmp)
            graph = Graph(report, env)
            nodes, specs, missing, _ = graph.walk(root_nodes, omit, skip)
            if not missing:
                break
            log(f"needed by the target, not by this interpreter: {sorted(missing)}")
            roots += [f"{r.name}{r.specifier}" for r in missing.values()]
        else:
            fail(f"could not close the dependency set: {sorted(missing)}")

        # Host packages whose version meets every requirement on them are left out.
        kept_from_host = {}
        for name in sorted(nodes - build_names - {"autolab"}):
            if name in host and all(s.contains(host[name], prereleases=True)
                                    for s in specs[name]):
                kept_from_host[name] = host[name]
        shadowed = sorted(n for n in nodes - set(kept_from_host) - build_names if n in host)
        nodes, specs, _, pruned = graph.walk(root_nodes, omit, skip | set(kept_from_host))

        ship = sorted(nodes - {"autolab"})
        pins = [f"{n}=={graph.items[n]['metadata']['version']}" for n in ship]
        log(f"downloading {len(pins)} wheels")
        pip("download", "--no-deps", "--only-binary=:all:",
            "--python-version", args.python_version, "--implementation", "cp",
            *[f"--platform={p}" for p in platforms], *local_links(tmp),
            "--dest", str(dest), *pins)

    wheels = sorted(dest.glob("*.whl"))
    leaked = [w.name for w in wheels if HOST_PROVIDED.match(wheel_name(w))]
    if leaked:
        fail(f"wheels the host must provide itself slipped in: {leaked}")
    got = {wheel_name(w) for w in wheels}
    if set(ship) - got:
        fail(f"not downloaded: {sorted(set(ship) - got)}")

    def need(name: str) -> str:
        spec = ",".join(sorted({str(s) for s in specs.get(name, []) if str(s)}))
        return name + (spec or "")

    host_side = sorted(set(pruned) - omit)
    lines = [
        "# autolab's runtime dependencies, for an offline install (make install-offline):",
        "#   pip install --no-index --find-links <this folder> --no-deps --require-hashes"
        " -r requirements.txt",
        f"# target: CPython {env['python_version']}, platforms: {' '.join(platforms)}",
        f"# profile: {args.profile}; autolab extras: {','.join(extras) or 'none'}",
        f"# autolab wheel: {own.name}; build backend: {', '.join(build)}",
        "# the host provides: " + ", ".join(need(n) for n in host_side),
        "# already on the host (skipped): " + (", ".join(
            [need(n) for n in sorted(skip)] + [f"{n}=={v}" for n, v in kept_from_host.items()])
            or "none"),
        "# left out (not needed at run time): " + (", ".join(sorted(omit)) or "none"),
    ]
    if shadowed:
        lines.append("# shipped although the host has them (its version does not fit): "
                     + ", ".join(f"{n} (host {host[n]})" for n in shadowed))
    by_name = {wheel_name(w): w for w in wheels}
    for pin in pins:
        name = canonicalize_name(pin.split("==")[0])
        if name in build_names:
            continue
        lines.append(f"{pin} --hash=sha256:{sha256(by_name[name])}")
    (dest / "requirements.txt").write_text("\n".join(lines) + "\n")

    total = sum(w.stat().st_size for w in wheels)
    if shadowed:
        log("shipped although the host has them (the host's version does not fit): "
            + ", ".join(f"{n} {host[n]}" for n in shadowed))
    if kept_from_host or skip:
        log(f"left out, already on the host: {sorted(skip | set(kept_from_host))}")
    log(f"the host must provide: {host_side}")
    log(f"{len(wheels)} wheels, {total / 2**20:.1f} MiB in {dest}")


if __name__ == "__main__":
    main()
