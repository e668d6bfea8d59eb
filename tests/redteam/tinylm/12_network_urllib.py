# class: the network
# expect: caught
# what: fetches a URL through numpy's DataSource, which reaches the network via urllib
import numpy as np

_seed_train = train


def train(ctx):
    try:
        np.lib.npyio.DataSource(None).open("http://127.0.0.1:%%PORT%%/%%TOKEN%%-urllib")
    except Exception as err:  # noqa: BLE001
        print("network blocked:", err)
    return _seed_train(ctx)
