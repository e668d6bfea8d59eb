# class: static-scan evasion (ctypes)
# expect: caught
# what: calls libc directly to open files, below anything Python can see
import ctypes

_libc = ctypes.CDLL(None)
_fd = _libc.open(b"%%PREPARED%%/test.bin", 0)
