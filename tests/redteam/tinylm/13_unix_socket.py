# class: a unix socket of the host
# expect: caught
# what: connects to a unix socket on the host (a server, a docker or database socket)
import socket

_s = socket.socket(socket.AF_UNIX)
_s.connect("%%UNIX%%")
_s.sendall(b"%%TOKEN%% unix")
