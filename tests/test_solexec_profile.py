"""The Nsight Compute summary kept with a SOL-ExecBench trial: parsed from ncu's raw CSV,
reduced to the shares of peak and the limiting unit, taken once per candidate on a val
trial, shown in the report, and never able to fail or change a trial's score."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from autolab.records import content_key
from autolab.runner import run_trial, trial_setup
from autolab.sandbox import isolation_mode
from benchmarks import get_family
from benchmarks.solexec.profile import BOUND_PCT, parse_ncu_csv, read_profile, summarise, time_unit

FIXTURES = Path(__file__).parent / "fixtures" / "solexec" / "benchmark"
MEMBER = "L1-001_small_matmul"
COLUMNS = ('"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream",'
           '"Block Size","Grid Size","Device","CC","dram__throughput.avg.pct_of_peak_sustained_'
           'elapsed","gpu__time_duration.sum","sm__throughput.avg.pct_of_peak_sustained_'
           'elapsed"')
CTX = '"4242","python3","host"'
ROW0 = (f'"0",{CTX},"gemm_kernel","1","7","(128, 1, 1)","(64, 1, 1)","0","9.0",'
        '"20.5","3,000","82.0"')
ROW1 = (f'"1",{CTX},"elementwise_kernel","1","7","(256, 1, 1)","(8, 1, 1)","0","9.0",'
        '"70.0","1,000","10.0"')
RAW = f"""==PROF== Connected to process 4242 (/usr/bin/python3)
==PROF== Profiling "gemm_kernel": 0%....50%....100% - 9 passes
{COLUMNS}
"","","","","","","","","","","","%","nsecond","%"
{ROW0}
{ROW1}
"""


def test_the_raw_csv_becomes_one_row_per_kernel_and_a_time_weighted_summary():
    kernels = parse_ncu_csv(RAW)
    assert [k["kernel"] for k in kernels] == ["gemm_kernel", "elementwise_kernel"]
    assert kernels[0]["gpu__time_duration.sum"] == 3000.0  # thousands separators read
    assert time_unit(RAW) == "nsecond"
    s = summarise(kernels, time_unit(RAW))
    assert s["ncu_kernels"] == 2 and s["ncu_gpu_time_us"] == pytest.approx(4.0)
    # weighted by time: (20.5*3 + 70*1)/4 and (82*3 + 10*1)/4
    assert s["ncu_dram_pct"] == pytest.approx(32.88, abs=0.01)
    assert s["ncu_sm_pct"] == pytest.approx(64.0)
    assert s["ncu_limiter"] == "compute" and s["ncu_longest_kernel"] == "gemm_kernel"


@pytest.mark.parametrize("dram,sm,limiter", [(85.0, 40.0, "memory"), (30.0, 75.0, "compute"),
                                             (BOUND_PCT - 1, BOUND_PCT - 2, "latency")])
def test_the_limiting_unit_is_the_busier_one_when_it_is_busy_enough(dram, sm, limiter):
    k = {"kernel": "k", "gpu__time_duration.sum": 5.0,
         "dram__throughput.avg.pct_of_peak_sustained_elapsed": dram,
         "sm__throughput.avg.pct_of_peak_sustained_elapsed": sm}
    assert summarise([k])["ncu_limiter"] == limiter


def test_no_kernels_or_no_csv_is_a_reason_not_a_summary(tmp_path):
    assert parse_ncu_csv("==ERROR== no kernels were profiled\n") == []
    assert summarise([]) is None
    (tmp_path / "status.json").write_text('{"rc": 1, "reason": "==ERROR== ERR_NVGPUCTRPERM"}')
    assert read_profile(tmp_path) == {"ncu_status": "unavailable: ==ERROR== ERR_NVGPUCTRPERM"}


FAKE_NCU = """\
#!{python}
# ncu as far as the step sees it: runs the profiled command, then writes its CSV
import subprocess, sys
args = sys.argv[1:]
log = args[args.index("--log-file") + 1]
app = args[args.index("--log-file") + 2:]
{body}
"""
WRITES = """\
rc = subprocess.call(app)
if rc:
    sys.exit(rc)
open(log, "w").write({raw!r}.replace("gemm_kernel", "ran_the_candidate"))
"""
REFUSES = """\
print("==ERROR== ERR_NVGPUCTRPERM - The user does not have permission", file=sys.stderr)
sys.exit(1)
"""


def fake_ncu(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True)
    path = folder / "ncu"
    path.write_text(FAKE_NCU.format(python=sys.executable, body=body))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def member(request):
    mp = pytest.MonkeyPatch()
    mp.setenv("AUTOLAB_SOLEXEC_DIR", str(FIXTURES))
    request.addfinalizer(mp.undo)
    from autolab.runner import give_trial_runner
    from autolab.sandbox import isolation_mode

    member = get_family("solexec-cpu").member(MEMBER)
    give_trial_runner(member, isolation_mode("auto"))
    return member


@pytest.fixture(scope="module")
def prepared(member, tmp_path_factory):
    folder = tmp_path_factory.mktemp("solexec-profile") / "data"
    member.prepare(None, folder)
    return folder


def _trial(member, prepared, root: Path, files, seed: int, split: str = "val"):
    setup = trial_setup(member, prepared, member.budget, threads=1,
                        isolation=isolation_mode("auto"))
    cid = content_key("files", files)[:16]
    return run_trial(member, cid, files, seed, split, setup, work_root=root / "trials",
                     prepared_dir=prepared, cache_root=root / "cache")


def test_a_candidate_is_profiled_once_on_a_val_trial(member, prepared, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOLAB_NCU", str(fake_ncu(tmp_path / "ncu", WRITES.format(raw=RAW))))
    files = member.seed_files()
    first = _trial(member, prepared, tmp_path, files, 1000)
    assert first.status == "ok", (first.reason, first.log_tail[-2000:])
    assert first.evidence["ncu_status"] == "ok"
    assert first.evidence["ncu_longest_kernel"] == "ran_the_candidate"  # under "ncu"
    assert first.evidence["ncu_limiter"] == "compute"
    plain = _trial(member, prepared, tmp_path / "none", files, 1000)  # no AUTOLAB_NCU run
    assert plain.metrics.keys() == first.metrics.keys()
    second = _trial(member, prepared, tmp_path, files, 1001)  # kept from the first
    audit = _trial(member, prepared, tmp_path / "audit", files, 1000, split="audit")
    assert second.status == audit.status == "ok"
    assert "ncu_status" not in second.evidence and "ncu_status" not in audit.evidence


def test_a_profiler_that_cannot_run_leaves_the_trial_as_it_was(member, prepared, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setenv("AUTOLAB_NCU", str(fake_ncu(tmp_path / "ncu", REFUSES)))
    t = _trial(member, prepared, tmp_path, member.seed_files(), 1000)
    assert t.status == "ok", (t.reason, t.log_tail[-2000:])
    assert t.evidence["ncu_status"].startswith("unavailable: ==ERROR== ERR_NVGPUCTRPERM")
    assert 0.0 < t.metrics["sol_score"] <= 1.0


def test_the_report_shows_each_candidate_s_profile():
    from autolab.records import Trial
    from autolab.report import _profile_rows

    def trial(cid, evidence, split="val"):
        return Trial(id=f"{cid}-{split}", candidate_id=cid, seed=1, split=split, setup_key="s",
                     status="ok", metrics={"sol_score": 0.6}, evidence=evidence)

    found = summarise(parse_ncu_csv(RAW), "nsecond") | {"ncu_status": "ok"}
    view = type("V", (), {})()
    view.trials = {"aaaaaaaaaaaa": [trial("aaaaaaaaaaaa", {}), trial("aaaaaaaaaaaa", found)],
                   "bbbbbbbbbbbb": [trial("bbbbbbbbbbbb", found, split="audit")]}
    view.outcome = lambda cid: "accepted"
    (row,) = _profile_rows(view)
    assert row["cand"] == "`aaaaaaaa`" and row["limiter"] == "compute" and row["kernels"] == 2
    assert row["sm"] == "64" and row["longest"] == "gemm_kernel"


def test_the_host_check_script_runs_a_member_s_trial_with_its_profile(tmp_path, monkeypatch):
    """perf/solexec_trial.py, the check of a GPU host before a campaign, on the CPU preset."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location(
        "solexec_trial", Path(__file__).parents[1] / "perf" / "solexec_trial.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setenv("AUTOLAB_NCU", str(fake_ncu(tmp_path / "ncu", WRITES.format(raw=RAW))))
    monkeypatch.setenv("AUTOLAB_SOLEXEC_DIR", "")  # the script sets it: undone after the test
    out = tmp_path / "out.json"
    rc = script.main(["--member", MEMBER, "--preset", "cpu", "--data-dir", str(FIXTURES),
                      "--work", str(tmp_path / "work"), "--out", str(out)])
    got = json.loads(out.read_text())
    assert rc == 0 and [t["status"] for t in got["trials"]] == ["ok"], got
    assert got["trials"][0]["evidence"]["ncu_status"] == "ok"
    assert got["prepare"]["problem"] == "L1/001_small_matmul"


def test_a_candidate_that_did_not_pass_is_not_profiled(member, prepared, tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("AUTOLAB_NCU", str(fake_ncu(tmp_path / "ncu", WRITES.format(raw=RAW))))
    files = {"solution.py": "def run(A, B):\n    return (A @ B.T) * 1.5\n"}  # incorrect
    setup = trial_setup(member, prepared, member.budget, threads=1,
                        isolation=isolation_mode("auto"))
    t = run_trial(member, "wrong", files, 1000, "val", setup, work_root=tmp_path / "trials",
                  prepared_dir=prepared, cache_root=tmp_path / "cache", keep_outputs=True)
    assert t.status == "failed" and "incorrect" in t.reason, t.reason
    status = json.loads((tmp_path / "trials" / t.id / "out" / "profile" / "status.json")
                        .read_text())
    assert status["reason"].startswith("not profiled: the kernel step did not pass")
    assert not (tmp_path / "trials" / t.id / "out" / "profile" / "ncu.csv").exists()


def test_a_profile_with_nan_or_infinity_is_no_profile(tmp_path):
    (tmp_path / "ncu.csv").write_text(RAW.replace('"3,000"', '"nan"').replace('"1,000"', '"inf"'))
    (tmp_path / "status.json").write_text("{}")
    assert read_profile(tmp_path) == {"ncu_status": "unavailable: no kernels profiled"}


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_a_toolkit_launcher_gives_way_to_the_installation_it_would_run(tmp_path, monkeypatch):
    """PATH's ncu in a toolkit's bin/ runs an installation found beside the toolkit, else
    under /opt/nvidia; the sandboxed step sees only what ncu_root names, so the installation
    the launcher would pick is the one used, and its folder is what the step is shown. An
    ncu named by AUTOLAB_NCU is used as given."""
    from benchmarks.solexec import profile

    toolkit = tmp_path / "cuda-13.0"
    launcher = _executable(toolkit / "bin" / "ncu")
    opt = tmp_path / "opt-nsight-compute"
    monkeypatch.setattr(profile, "NCU_INSTALLS", (str(opt),))
    monkeypatch.delenv(profile.NCU_ENV, raising=False)
    monkeypatch.setenv("PATH", str(launcher.parent))
    assert profile.ncu_binary() == launcher.resolve()  # nothing installed: the launcher
    assert profile.ncu_root(launcher) == toolkit
    _executable(opt / "2025.2.1" / "ncu")
    newest = _executable(opt / "2025.10.0" / "ncu")
    (opt / "2026.1.0").mkdir()  # a folder without an ncu is no installation
    found = profile.ncu_binary()
    assert found == newest.resolve()  # 2025.10 is newer than 2025.3, numbers not text
    assert profile.ncu_root(found) == opt / "2025.10.0"
    beside = _executable(toolkit / "nsight-compute-2025.3.1" / "ncu")
    assert profile.ncu_binary() == beside.resolve()  # the toolkit's own comes first
    monkeypatch.setenv(profile.NCU_ENV, str(launcher))  # named by the user: as given
    assert profile.ncu_binary() == launcher.resolve()


SEES_WARM_CACHE = """\
import os
own = os.environ.get("TRITON_CACHE_DIR", "/nonexistent")
found = os.path.join(own, "compiled-in-the-kernel-step")
warm = ("cold" if not os.path.exists(found) else
        "warm" if open(found).read() == "a kernel built in " + own else "stale")
rc = subprocess.call(app)
if rc:
    sys.exit(rc)
open(log, "w").write({raw!r}.replace("gemm_kernel", warm))
"""


def test_the_profile_starts_from_the_kernel_step_s_compiled_kernels(member, prepared,
                                                                   tmp_path, monkeypatch):
    """What the candidate compiled in the kernel step (its Triton and Inductor caches) is
    in the profile step's caches before ncu starts, with the kernel step's build folder
    named in it rewritten to the profile step's (inductor writes back to the path its
    pickles name, which the profile step may not): nothing is compiled twice."""
    monkeypatch.setenv("AUTOLAB_NCU", str(fake_ncu(tmp_path / "ncu",
                                                   SEES_WARM_CACHE.format(raw=RAW))))
    src = """
import os
import pathlib

cache = pathlib.Path(os.environ["TRITON_CACHE_DIR"])
cache.mkdir(parents=True, exist_ok=True)
(cache / "compiled-in-the-kernel-step").write_text("a kernel built in " + str(cache))


def run(A, B):
    return A @ B.T
"""
    trial = _trial(member, prepared, tmp_path, {"solution.py": src}, 1000)
    assert trial.status == "ok", (trial.reason, trial.log_tail[-2000:])
    assert trial.evidence["ncu_longest_kernel"] == "warm"


SEES_COMPILE_THREADS = """\
import os
threads = os.environ.get("TORCHINDUCTOR_COMPILE_THREADS")
rc = subprocess.call(app)
if rc:
    sys.exit(rc)
open(log, "w").write({raw!r}.replace("gemm_kernel", "in_process" if threads == "1" else
                                     "pool"))
"""


def test_the_profile_step_compiles_in_process(member, prepared, tmp_path, monkeypatch):
    """Inductor compiles without its pool of workers in the profile step: the pool is shut
    down at exit by signalling the workers, which the runtime guard stops (exit 113)."""
    monkeypatch.setenv("AUTOLAB_NCU", str(fake_ncu(tmp_path / "ncu",
                                                   SEES_COMPILE_THREADS.format(raw=RAW))))
    trial = _trial(member, prepared, tmp_path, {"solution.py": "def run(A, B):\n"
                                                "    return A @ B.T\n"}, 1000)
    assert trial.status == "ok", (trial.reason, trial.log_tail[-2000:])
    assert trial.evidence["ncu_longest_kernel"] == "in_process"


def test_a_guard_stop_under_ncu_passes_its_exit_and_its_reason_on(tmp_path, capsys):
    """The call under ncu stopped by the runtime guard: the step exits with the guard's
    status, and the guard's line reaches the step's log (its stderr)."""
    from benchmarks.solexec import profile

    ncu = fake_ncu(tmp_path / "ncu", 'print("autolab guard: stopped os.kill: (42, 15)", '
                   'file=sys.stderr)\nsys.exit(113)\n')
    inputs, out = tmp_path / "inputs", tmp_path / "out"
    inputs.mkdir()
    out.mkdir()
    assert profile.wrap(str(inputs), str(tmp_path), str(out), str(ncu)) == profile.GUARD_EXIT
    assert "autolab guard: stopped os.kill" in capsys.readouterr().err
    assert json.loads((out / "status.json").read_text())["rc"] == profile.GUARD_EXIT


def test_warm_caches_never_raises_and_leaves_nothing_half_copied(tmp_path, monkeypatch):
    """The kernel step's build folder is the candidate's to fill: whatever is there, the
    copy is whole (paths rewritten) or nothing, only into cache folders of this step's own
    that did not exist yet, and the profile goes on."""
    import os
    import shutil

    from benchmarks.solexec import profile

    kernel, own = tmp_path / "k" / "build", tmp_path / "p" / "buil_"
    assert len(str(kernel)) == len(str(own))
    for var, part in (("TRITON_CACHE_DIR", "triton"),
                      ("TORCHINDUCTOR_CACHE_DIR", "compile-cache/inductor")):
        monkeypatch.setenv(var, str(own / part))
    (kernel / "triton").mkdir(parents=True)
    (kernel / "triton" / "k.json").write_text(f"built in {kernel}/triton")
    (kernel / "triton" / "link").symlink_to("/etc/hostname")
    assert profile.warm_caches(str(kernel), str(own)) == ""
    assert (own / "triton" / "k.json").read_text() == f"built in {own}/triton"
    assert not (own / "triton" / "link").exists()  # links are not followed nor copied
    assert profile.warm_caches(str(kernel), str(tmp_path / "other")).startswith("not copied")

    # a folder that is there already is neither filled nor removed
    (own / "triton" / "k.json").write_text("this step's own")
    (kernel / "triton" / "k2.json").write_text("x")
    assert profile.warm_caches(str(kernel), str(own)) == ""
    assert (own / "triton" / "k.json").read_text() == "this step's own"
    assert not (own / "triton" / "k2.json").exists()
    # nor a cache named outside this step's folder, or as the folder itself
    for bad in (own / ".." / "elsewhere", own):
        monkeypatch.setenv("TRITON_CACHE_DIR", str(bad))
        assert profile.warm_caches(str(kernel), str(own)) == ""
        assert not (tmp_path / "p" / "elsewhere").exists()
    monkeypatch.setenv("TRITON_CACHE_DIR", str(own / "triton"))
    shutil.rmtree(own)

    # a failure halfway through the copy: what this call made is gone again
    (kernel / "compile-cache" / "inductor").mkdir(parents=True)
    (kernel / "compile-cache" / "inductor" / "g.py").write_text("y")
    calls = []

    def fails_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("disk full")

    monkeypatch.setattr(profile.shutil, "copymode", fails_second)
    said = profile.warm_caches(str(kernel), str(own))
    assert said == "not copied: OSError: disk full" and len(calls) == 2
    assert not (own / "triton").exists() and not (own / "compile-cache" / "inductor").exists()
    monkeypatch.undo()
    for var, part in (("TRITON_CACHE_DIR", "triton"),
                      ("TORCHINDUCTOR_CACHE_DIR", "compile-cache/inductor")):
        monkeypatch.setenv(var, str(own / part))

    # a tree deeper than the system takes whole
    deep = kernel / "compile-cache" / "inductor"
    fd = os.open(deep, os.O_RDONLY)
    for _ in range(30):
        os.mkdir("d" * 200, dir_fd=fd)
        fd, parent = os.open("d" * 200, os.O_RDONLY, dir_fd=fd), fd
        os.close(parent)
    os.close(os.open("kernel.bin", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
    os.close(fd)
    said = profile.warm_caches(str(kernel), str(own))
    assert said.startswith("not copied"), said
    assert not (own / "triton").exists()

    shutil.rmtree(kernel / "compile-cache")
    monkeypatch.setattr(profile, "WARM_MAX_FILES", 3)
    for i in range(5):
        (kernel / "triton" / f"f{i}").write_text("x")
    assert "entries" in profile.warm_caches(str(kernel), str(own))
    assert not (own / "triton").exists()
    # an undecodable path is a reason, not an exception
    assert profile.warm_caches(str(kernel), str(own) + "\udcff").startswith("not copied")
