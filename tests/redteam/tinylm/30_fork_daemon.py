# class: work in a forked child that outlives the step
# expect: caught
# what: forks a daemon that keeps running (and could rewrite the saved model) after the
#   train step has ended
import multiprocessing

_seed_train = train


def _daemon():
    import time

    while True:
        time.sleep(1)


def train(ctx):
    multiprocessing.Process(target=_daemon, name="zz-%%TOKEN%%", daemon=False).start()
    return _seed_train(ctx)
