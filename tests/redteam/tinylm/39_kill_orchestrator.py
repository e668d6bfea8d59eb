# class: killing the orchestrator
# expect: caught
# what: signals its parent's process group to kill the orchestrator (and every trial),
#   reaching os through a module it may import
_os = torch.serialization.tempfile._os
_seed_train = train


def train(ctx):
    _os.killpg(_os.getpgid(_os.getppid()), 9)
    return _seed_train(ctx)
