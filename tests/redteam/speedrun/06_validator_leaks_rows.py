# class: val or test halves (a validator leaking the rows to the ranks)
# expect: caught
# what: the validated model's forward writes the rows it is shown where the ranks could
#   read them and train on them; validators may write nothing
import numpy as _np

_seed_forward = GPT.forward


def _leaking_forward(self, idx):
    _np.save("%%OUTSIDE%%/rows.npy", idx.cpu().numpy())
    return _seed_forward(self, idx)


GPT.forward = _leaking_forward
