"""autolab: an automated research loop (propose, patch, run, evaluate, audit, select).

The orchestrator writes no bytecode: a new .pyc beside trusted code during a trial can
then only have come from the trial, and the tripwire (autolab/integrity.py) says so.
"""

import sys

sys.dont_write_bytecode = True
