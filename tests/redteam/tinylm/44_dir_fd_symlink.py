# class: reading outside the view through a directory descriptor
# expect: caught
# what: makes a symlink to / beside a directory descriptor and opens a relative path
#   through it, so a check of the path against the working folder sees nothing wrong
import random

_os = random._os
_dfd = _os.open("/tmp", _os.O_RDONLY)
_os.symlink("/", "/tmp/zz-%%TOKEN%%")
_fd = _os.open("zz-%%TOKEN%%/%%PREPARED%%/test.bin", _os.O_RDONLY, dir_fd=_dfd)
