# class: writing outside the workspace (the virtualenv)
# expect: caught
# what: drops a .pth file into site-packages, which runs code at every interpreter start
_seed_train = train


def train(ctx):
    with torch.serialization._open_file("%%SITE%%/zz_%%TOKEN%%.pth", "wb") as f:
        f.write(b"import sys\n")
    return _seed_train(ctx)
