# class: secrets from the host
# expect: caught
# what: reads a secrets file lying in the project checkout and prints it
import numpy as np

_seed_train = train


def train(ctx):
    print("secret:", np.lib.npyio.DataSource(None).open("%%SECRET_FILE%%").read())
    return _seed_train(ctx)
