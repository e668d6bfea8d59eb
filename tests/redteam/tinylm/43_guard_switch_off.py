# class: switching the runtime guard off
# expect: caught
# what: reaches sys through a module it may import and clears the import machinery and the
#   guard's state, then reads the prepared test split
import collections

for _f in list(collections._sys.meta_path):
    for _name in ("guard", "armed", "_allowed"):
        try:
            setattr(_f, _name, None)
        except (AttributeError, TypeError):
            pass
_TEST = open("%%PREPARED%%/test.bin", "rb").read()
