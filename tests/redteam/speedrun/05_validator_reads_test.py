# class: val or test halves (from a validator)
# expect: caught
# what: the validated model's forward opens the test token file
import numpy as _np

_seed_forward = GPT.forward


def _peeking_forward(self, idx):
    self.stolen = _np.fromfile("%%PREPARED%%/test.bin", dtype=_np.uint16)
    return _seed_forward(self, idx)


GPT.forward = _peeking_forward
