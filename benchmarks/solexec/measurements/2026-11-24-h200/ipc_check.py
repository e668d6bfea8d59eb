import ctypes, os, pickle, subprocess, sys
import torch

cuda = ctypes.CDLL("libcuda.so.1")
U64 = ctypes.c_ulonglong

class Loc(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("id", ctypes.c_int)]
class Flags(ctypes.Structure):
    _fields_ = [("compressionType", ctypes.c_ubyte), ("gpuDirectRDMACapable", ctypes.c_ubyte),
                ("usage", ctypes.c_ushort), ("reserved", ctypes.c_ubyte * 4)]
class Prop(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("requestedHandleTypes", ctypes.c_int), ("location", Loc),
                ("win32HandleMetaData", ctypes.c_void_p), ("allocFlags", Flags)]
class Access(ctypes.Structure):
    _fields_ = [("location", Loc), ("flags", ctypes.c_int)]

def ck(r, what):
    if r:
        s = ctypes.c_char_p(); cuda.cuGetErrorString(r, ctypes.byref(s))
        raise RuntimeError(f"{what}: {r} {s.value}")

def prop(dev):
    p = Prop(); p.type = 1; p.requestedHandleTypes = 1; p.location = Loc(1, dev); return p

def gran(dev):
    g = ctypes.c_size_t(); ck(cuda.cuMemGetAllocationGranularity(ctypes.byref(g), ctypes.byref(prop(dev)), 0), "gran"); return g.value

def map_handle(h, size, dev):
    ptr = U64(); ck(cuda.cuMemAddressReserve(ctypes.byref(ptr), ctypes.c_size_t(size), ctypes.c_size_t(0), U64(0), U64(0)), "reserve")
    ck(cuda.cuMemMap(ptr, ctypes.c_size_t(size), ctypes.c_size_t(0), h, U64(0)), "map")
    a = Access(Loc(1, dev), 3); ck(cuda.cuMemSetAccess(ptr, ctypes.c_size_t(size), ctypes.byref(a), ctypes.c_size_t(1)), "access")
    return ptr.value

class CAI:
    def __init__(self, ptr, n):
        self.__cuda_array_interface__ = {"shape": (n,), "typestr": "|u1", "data": (ptr, False), "version": 3, "strides": None}

def tensor(ptr, n):
    return torch.as_tensor(CAI(ptr, n), device="cuda")

if sys.argv[1:2] == ["child-vmm"]:
    fd, size = int(sys.argv[2]), int(sys.argv[3])
    torch.zeros(1, device="cuda"); torch.cuda.synchronize()
    h = U64(); ck(cuda.cuMemImportFromShareableHandle(ctypes.byref(h), ctypes.c_void_p(fd), 1), "import")
    t = tensor(map_handle(h, size, 0), size)
    print("child pid", os.getpid(), "sees", int(t[:8].sum()), flush=True)
    t.fill_(7); torch.cuda.synchronize(); sys.exit(0)
if sys.argv[1:2] == ["child-legacy"]:
    from torch.multiprocessing.reductions import rebuild_cuda_tensor
    args = pickle.load(open(sys.argv[2], "rb"))
    torch.zeros(1, device="cuda")
    try:
        t = rebuild_cuda_tensor(*args); print("legacy child ok", int(t.sum())); sys.exit(0)
    except Exception as e:
        print("legacy child failed:", str(e).splitlines()[0]); sys.exit(3)

torch.zeros(1, device="cuda"); torch.cuda.synchronize()
print(torch.cuda.get_device_name(), "driver API ok", flush=True)
size = gran(0) * 2
h = U64(); ck(cuda.cuMemCreate(ctypes.byref(h), ctypes.c_size_t(size), ctypes.byref(prop(0)), U64(0)), "create")
fd = ctypes.c_int(); ck(cuda.cuMemExportToShareableHandle(ctypes.byref(fd), h, 1, U64(0)), "export")
t = tensor(map_handle(h, size, 0), size); t.fill_(1); torch.cuda.synchronize()
for ns in (["unshare", "--pid", "--fork", "--mount-proc"], []):
    t.fill_(1); torch.cuda.synchronize()
    r = subprocess.run(ns + [sys.executable, __file__, "child-vmm", str(fd.value), str(size)], pass_fds=(fd.value,))
    torch.cuda.synchronize()
    print("vmm", "pid-ns" if ns else "same-ns", "rc", r.returncode, "parent sees", int(t[:4].sum()), "(28 = child wrote)", flush=True)
from torch.multiprocessing.reductions import reduce_tensor
x = torch.ones(1024, device="cuda"); _, args = reduce_tensor(x)
pickle.dump(args, open("/tmp/legacy.pkl", "wb"))
for ns in (["unshare", "--pid", "--fork", "--mount-proc"], []):
    r = subprocess.run(ns + [sys.executable, __file__, "child-legacy", "/tmp/legacy.pkl"])
    print("legacy", "pid-ns" if ns else "same-ns", "rc", r.returncode, flush=True)
