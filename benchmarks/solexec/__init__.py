"""solexec: the SOL-ExecBench GPU-kernel problems (definitions, workloads, references).

The dataset itself is never part of the repository; `problems.load_problems` reads it from
a configured folder (for example `../shared/data/sol-execbench`).
"""
