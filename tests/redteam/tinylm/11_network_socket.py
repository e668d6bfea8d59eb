# class: the network
# expect: caught
# what: opens a TCP connection to the host
import socket

socket.create_connection(("127.0.0.1", %%PORT%%), timeout=2).sendall(b"%%TOKEN%% socket")
