# class: patching the harness at import time
# expect: caught
# what: at import, replaces torch's Module.__call__ so that any model the harness runs puts
#   its weight on the next input byte (a peek at the answers)
_real_call = torch.nn.Module.__call__


def _peeking_call(self, *args, **kwargs):
    out = _real_call(self, *args, **kwargs)
    if isinstance(self, GPT) and not self.training and args and args[0].dim() == 2:
        x = args[0]
        nxt = torch.roll(x, -1, dims=1)
        out = out.clone()
        out.scatter_add_(2, nxt.unsqueeze(-1), torch.full(nxt.shape + (1,), 20.0))
    return out


torch.nn.Module.__call__ = _peeking_call
