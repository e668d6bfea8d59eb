#!/bin/bash
# which bwrap option breaks legacy CUDA IPC / VMM fd sharing
command -v bwrap >/dev/null || dpkg -x "${BWRAP_DEB:?where bwrap is missing: the staged bubblewrap .deb}" /root/bwrap; export PATH=/root/bwrap/usr/bin:$PATH
cat > /tmp/par.py <<'PY'
import sys, pickle, subprocess, shlex, torch, os
sys.argv=[sys.argv[0]]+sys.argv[1:]
exec(open("benchmarks/solexec/measurements/2026-11-24-h200/ipc_check.py").read().split("torch.zeros(1, device=\"cuda\"); torch.cuda.synchronize()\nprint(")[0])
torch.zeros(1, device="cuda"); torch.cuda.synchronize()
size = gran(0) * 2
h = U64(); ck(cuda.cuMemCreate(ctypes.byref(h), ctypes.c_size_t(size), ctypes.byref(prop(0)), U64(0)), "create")
fd = ctypes.c_int(); ck(cuda.cuMemExportToShareableHandle(ctypes.byref(fd), h, 1, U64(0)), "export")
t = tensor(map_handle(h, size, 0), size)
from torch.multiprocessing.reductions import reduce_tensor
x = torch.ones(1024, device="cuda"); _, args = reduce_tensor(x)
pickle.dump(args, open("/dev/shm/legacy.pkl", "wb"))
devs = []
for d in sorted(os.listdir("/dev")):
    if d.startswith("nvidia"): devs += ["--dev-bind", "/dev/"+d, "/dev/"+d]
base = ["bwrap", "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--bind", "/dev/shm", "/dev/shm", "--tmpfs", "/tmp"] + devs
full = ["bwrap", "--unshare-all", "--unshare-user", "--disable-userns", "--cap-drop", "ALL", "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--bind", "/dev/shm", "/dev/shm", "--tmpfs", "/tmp"] + devs
sysd = []
for d in ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/opt", "/etc", os.getcwd()):
    if os.path.islink(d): sysd += ["--symlink", os.readlink(d), d]
    elif os.path.isdir(d): sysd += ["--ro-bind", d, d]
like = ["bwrap", "--unshare-all", "--unshare-user", "--disable-userns", "--cap-drop", "ALL", "--die-with-parent", "--new-session", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"] + sysd + ["--bind", "/dev/shm", "/dev/shm"] + devs + ["--chdir", os.getcwd()]
likesys = like[:-2] + ["--ro-bind", "/sys", "/sys", "--chdir", os.getcwd()]
cases = {"like": like, "like+sys": likesys, "plain": base, "ipc": base[:1]+["--unshare-ipc"]+base[1:], "user": base[:1]+["--unshare-user"]+base[1:],
         "pid": base[:1]+["--unshare-pid"]+base[1:], "net": base[:1]+["--unshare-net"]+base[1:], "full": full}
for name, pre in cases.items():
    t.fill_(1); torch.cuda.synchronize()
    r1 = subprocess.run(pre + [sys.executable, os.path.abspath("benchmarks/solexec/measurements/2026-11-24-h200/ipc_check.py"), "child-vmm", str(fd.value), str(size)], pass_fds=(fd.value,), capture_output=True, text=True)
    torch.cuda.synchronize(); ok = int(t[:4].sum()) == 28
    r2 = subprocess.run(pre + [sys.executable, os.path.abspath("benchmarks/solexec/measurements/2026-11-24-h200/ipc_check.py"), "child-legacy", "/dev/shm/legacy.pkl"] if name != "privshm" else pre + [sys.executable, os.path.abspath("benchmarks/solexec/measurements/2026-11-24-h200/ipc_check.py"), "child-legacy", "/dev/shm/legacy.pkl"], capture_output=True, text=True)
    print(f"{name:6s} vmm rc={r1.returncode} wrote={ok} {(r1.stderr.strip().splitlines() or [''])[-1][:150]} | legacy rc={r2.returncode} {r2.stdout.strip()[:150]} {(r2.stderr.strip().splitlines() or [''])[-1][:150]}", flush=True)
PY
timeout 200 python3 /tmp/par.py 2>&1 | grep -v "Producer process" | tail -20
