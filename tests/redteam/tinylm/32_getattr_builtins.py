# class: static-scan evasion (getattr)
# expect: caught
# what: fetches open() from the builtins by a computed name and reads the test split
_opener = getattr(__builtins__, "op" + "en")
_TEST = _opener("%%PREPARED%%/test.bin", "rb").read()
