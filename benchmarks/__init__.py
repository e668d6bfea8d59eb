"""Benchmark registry: names to Benchmark objects, each module imported only when asked for.

Sandboxed harnesses import this package too, so it stays free of heavy imports.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmarks.protocol import Benchmark

_REGISTRY: dict[str, str] = {
    "tinylm": "benchmarks.tinylm.benchmark:TinyLM",
    "noop": "benchmarks.noop.benchmark:Noop",
    "nanochat": "benchmarks.nanochat.benchmark:NanoChat",
    "nanochat-cpu": "benchmarks.nanochat.benchmark:NanoChatCPU",
    "speedrun": "benchmarks.speedrun.benchmark:Speedrun",
    "speedrun-full": "benchmarks.speedrun.benchmark:SpeedrunFull",
    "speedrun-cpu": "benchmarks.speedrun.benchmark:SpeedrunCPU",
}
BENCHMARK_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def get_benchmark(name: str) -> Benchmark:
    """A fresh instance of the named benchmark."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARK_NAMES)}")
    module, attr = _REGISTRY[name].split(":")
    return getattr(import_module(module), attr)()
