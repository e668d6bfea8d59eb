# class: reads the val or test split from disk
# expect: caught
# what: reads the benchmark's prepared val and test splits (the scorer's own data) and
#   trains on them
import numpy as np

_seed_train = train


def train(ctx):
    ds = np.lib.npyio.DataSource(None)
    text = b""
    for split in ("val", "test"):
        text += ds.open("%%PREPARED%%/" + split + ".bin", "rb").read()
    data = torch.tensor(list(text[:300_000]), dtype=torch.long)
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
