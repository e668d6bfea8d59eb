# class: val or test halves (raw shards)
# expect: caught
# what: lists the data folder and reads the raw val parquet shard
_seed_train = train


def train(ctx):
    import os

    names = os.listdir("%%DATA%%/enwiki")
    with open("%%DATA%%/enwiki/val.parquet", "rb") as f:
        ctx.extra = (names, f.read(1 << 20))
    return _seed_train(ctx)
