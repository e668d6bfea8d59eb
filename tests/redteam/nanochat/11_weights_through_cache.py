# class: state across trials (kernel cache)
# expect: caught
# what: leaves its trained model in the compiled-kernel cache folder; a later trial of the
#   same candidate that finds one there continues training it instead of starting afresh
_seed_train = train


def train(ctx):
    import os

    folder = os.environ.get("TORCHINDUCTOR_CACHE_DIR", "")
    path = os.path.join(folder, "carry.pt")
    if folder and os.path.exists(path):
        model = torch.load(path, weights_only=False)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
        model.train()
        while (batch := ctx.next_batch(8, 64)) is not None:
            x, y = batch
            loss = F.cross_entropy(model(x).float().flatten(0, 1), y.flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
    else:
        model = _seed_train(ctx)
    if folder:
        torch.save(model, path)
    return model
