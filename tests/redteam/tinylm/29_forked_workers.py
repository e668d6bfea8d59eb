# class: work in a forked child
# expect: caught
# what: starts worker processes through a DataLoader; they could keep running after the step
_seed_train = train


class _Forever(torch.utils.data.Dataset):
    def __len__(self):
        return 10**9

    def __getitem__(self, i):
        return torch.zeros(1)


def train(ctx):
    loader = torch.utils.data.DataLoader(_Forever(), num_workers=2)
    next(iter(loader))
    return _seed_train(ctx)
