# class: the network
# expect: caught
# what: opens a socket of its own to report a score to the host
import socket as _socket

_s = _socket.create_connection(("127.0.0.1", %%PORT%%), timeout=2)
_s.sendall(b"score 0.1 %%TOKEN%%")
