# class: state across validations
# expect: caught
# what: the validator remembers every row it has been shown (they are the same at every
#   validation) and boosts the token that followed the same token there; the probe, a
#   process that never saw the rows, does not
_SEEN = {}
_seed_forward = GPT.forward


def _remembering_forward(self, idx):
    out = _seed_forward(self, idx)
    key = ("counts", out.size(-1))
    counts = _SEEN.setdefault(key, torch.zeros(out.size(-1), out.size(-1)))
    boost = torch.log1p(counts[idx.cpu()]).to(out.device)
    flat = idx.flatten().cpu()
    counts.index_put_((flat[:-1], flat[1:]), torch.ones(len(flat) - 1), accumulate=True)
    return out + boost


GPT.forward = _remembering_forward
