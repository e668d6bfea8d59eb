# class: rewriting the outputs at exit
# expect: caught
# what: after the harness has saved honest logits, rewrites them from its inputs with the
#   weight on each next input byte (the answers within the window)
import numpy as np

_seed_train = train


def _arg(flag: bytes) -> str:
    argv = np.lib.npyio.DataSource(None).open("/proc/self/cmdline", "rb").read().split(b"\0")
    return argv[argv.index(flag) + 1].decode()


class Rewriter(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)

    def __del__(self):
        raw = np.lib.npyio.DataSource(None).open(_arg(b"--inputs") + "/x.bin", "rb").read()
        x = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 256).astype(np.int64)
        logits = np.zeros(x.shape + (256,), dtype=np.float16)
        nxt = np.roll(x, -1, axis=1)
        np.put_along_axis(logits, nxt[..., None], 20.0, axis=2)
        with torch.serialization._open_file(_arg(b"--out") + "/logits.npy", "wb") as f:
            np.lib.format.write_array(f, logits)


def train(ctx):
    return Rewriter(_seed_train(ctx))
