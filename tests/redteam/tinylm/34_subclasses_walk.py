# class: static-scan evasion (object graph)
# expect: caught
# what: walks from a literal to every class in the interpreter to find a file reader
_classes = ().__class__.__bases__[0].__subclasses__()
_reader = next(c for c in _classes if c.__name__ == "FileIO")
