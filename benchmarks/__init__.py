"""Benchmark registry: names to Benchmark objects, each module imported only when asked for.

Sandboxed harnesses import this package too, so it stays free of heavy imports.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmarks.protocol import Benchmark, BenchmarkFamily

_REGISTRY: dict[str, str] = {
    "tinylm": "benchmarks.tinylm.benchmark:TinyLM",
    "noop": "benchmarks.noop.benchmark:Noop",
    "noop-sleep": "benchmarks.noop.benchmark:NoopSleep",
    "nanochat": "benchmarks.nanochat.benchmark:NanoChat",
    "nanochat-cpu": "benchmarks.nanochat.benchmark:NanoChatCPU",
    "speedrun": "benchmarks.speedrun.benchmark:Speedrun",
    "speedrun-full": "benchmarks.speedrun.benchmark:SpeedrunFull",
    "speedrun-cpu": "benchmarks.speedrun.benchmark:SpeedrunCPU",
}
BENCHMARK_NAMES: tuple[str, ...] = tuple(_REGISTRY)

# Families of related problems; a member is addressed as "FAMILY/MEMBER".
_FAMILIES: dict[str, str] = {
    "noop-family": "benchmarks.noop.family:NoopFamily",
    "solexec": "benchmarks.solexec.family:SolExec",
    "solexec-cpu": "benchmarks.solexec.family:SolExecCPU",
}
FAMILY_NAMES: tuple[str, ...] = tuple(_FAMILIES)


def get_family(name: str) -> BenchmarkFamily:
    """A fresh instance of the named family."""
    if name not in _FAMILIES:
        raise KeyError(f"unknown benchmark family {name!r}; known: {', '.join(FAMILY_NAMES)}")
    module, attr = _FAMILIES[name].split(":")
    return getattr(import_module(module), attr)()


def get_benchmark(name: str) -> Benchmark:
    """A fresh instance of the named benchmark, or of a family's member ("FAMILY/MEMBER")."""
    family, _, member = name.partition("/")
    if member and family in _FAMILIES:
        return get_family(family).member(member)
    if name not in _REGISTRY:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARK_NAMES)} "
                       f"and the members of {', '.join(FAMILY_NAMES)} (FAMILY/MEMBER)")
    module, attr = _REGISTRY[name].split(":")
    return getattr(import_module(module), attr)()
