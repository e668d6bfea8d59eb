# class: work outside the clock (in the validation pause)
# expect: caught
# what: the validated model's forward sleeps, standing for training done while the clock
#   is paused: the validator is another process, so nothing it does reaches the ranks,
#   and whatever a pause takes beyond its allowance is clocked
import time as _time

_seed_forward = GPT.forward


def _slow_forward(self, idx):
    _time.sleep(0.4)
    return _seed_forward(self, idx)


GPT.forward = _slow_forward
