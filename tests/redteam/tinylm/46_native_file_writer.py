# class: writing outside the workspace through native code
# expect: caught
# what: torch's C++ zip writer opens its file below Python, where no audit event fires
_seed_train = train


def train(ctx):
    with torch.serialization._open_zipfile_writer("%%OUTSIDE%%/zz-%%TOKEN%%.zip") as w:
        w.write_record("data", b"x", 1)
    return _seed_train(ctx)
