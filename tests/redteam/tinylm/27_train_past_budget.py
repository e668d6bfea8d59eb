# class: training past the budget
# expect: caught
# what: keeps training on its batches, over and over, far past the trial's time budget
import time

_seed_train = train


def train(ctx):
    model = GPT(ctx.vocab_size)
    opt = make_optimizer(model)
    batches = []
    while (batch := ctx.next_batch(BATCH_SIZE, SEQ_LEN)) is not None:
        batches.append(batch)
    end = time.time() + 600
    while time.time() < end:
        for x, y in batches:
            loss = F.cross_entropy(model(x).view(-1, 256), y.view(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model
