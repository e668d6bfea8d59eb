"""The offline kernel search's technique library for SOL-ExecBench (no language model).

    from benchmarks.solexec.search import signature, applicable, TECHNIQUES, tune

    sig = signature(problem)              # category + operator signature (categorise.py)
    for technique in applicable(problem): # techniques.py
        files = technique.render(problem, technique.defaults)   # {"solution.py": ...}
        result = tune(problem, technique, 20, evaluate_fn)      # tune.py, Optuna TPE

README.md beside this file lists the techniques, what each applies to and its space.
"""

from benchmarks.solexec.search.categorise import CATEGORIES, Signature, category, signature
from benchmarks.solexec.search.codegen import Unsupported
from benchmarks.solexec.search.techniques import TECHNIQUES, Technique, applicable
from benchmarks.solexec.search.tune import TuneResult, tune

__all__ = ["CATEGORIES", "TECHNIQUES", "Signature", "Technique", "TuneResult", "Unsupported",
           "applicable", "category", "signature", "tune"]
