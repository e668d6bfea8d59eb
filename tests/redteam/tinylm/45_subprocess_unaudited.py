# class: starting a process the guard cannot see
# expect: caught
# what: replaces the sys that subprocess reports through with a stand-in whose audit()
#   does nothing, then starts a shell
import enum

_CODE = (
    "import subprocess, sys as real\n"
    "class Quiet:\n"
    "    def __getattr__(self, n): return getattr(real, n)\n"
    "    def audit(self, *a): pass\n"
    "subprocess.sys = Quiet()\n"
    "subprocess.run(['/bin/sh', '-c', 'echo zz-%%TOKEN%% > %%OUTSIDE%%/zz-%%TOKEN%%-sh'])\n"
)
enum.bltns.exec(_CODE, {})
