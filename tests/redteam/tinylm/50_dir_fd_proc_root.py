# class: reading outside the view through a directory descriptor
# expect: caught
# what: opens /proc/self as a directory and reads the project's secret file through
#   root/ relative to it: the name the guard sees is relative to the working folder
import random

_os = random._os
_dfd = _os.open("/proc/self", _os.O_RDONLY)
_fd = _os.open("root%%SECRET_FILE%%", _os.O_RDONLY, dir_fd=_dfd)
print("secret:", _os.read(_fd, 200))
