# class: killing the orchestrator
# expect: caught
# what: signals its parent through a pidfd, a call the guard's kill check does not see
import signal
import random

_os = random._os
signal.pidfd_send_signal(_os.pidfd_open(_os.getppid()), 9)
