# class: training past the budget (prefetch)
# expect: caught
# what: asks for batches as fast as it can until the server refuses, then trains on them
#   for as long as the seed would have trained on fresh ones
def train(ctx):
    import time

    batches = []
    while (b := ctx.next_batch(4, 32)) is not None:
        batches.append(b)
    model = nn.Sequential(nn.Embedding(ctx.vocab_size, 64), nn.Linear(64, ctx.vocab_size))
    model = model.to(ctx.device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    stop = time.monotonic() + 2 * ctx.budget_s
    while time.monotonic() < stop:
        for x, y in batches:
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model
