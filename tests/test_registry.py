"""The benchmark registry: names, lazy imports, and each benchmark honouring the protocol."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys

import pytest

from benchmarks import BENCHMARK_NAMES, get_benchmark
from benchmarks.protocol import Benchmark, EditNotApplicable


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(KeyError) as err:
        get_benchmark("nope")
    assert all(name in str(err.value) for name in BENCHMARK_NAMES)


def test_importing_the_registry_loads_no_benchmark():
    probe = (
        "import json, sys, benchmarks\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('benchmarks.', "
        "'torch', 'pydantic')))))"
    )
    res = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(res.stdout) == []


@pytest.mark.parametrize("name", BENCHMARK_NAMES)
def test_each_benchmark_honours_the_protocol(name):
    bench = get_benchmark(name)
    assert isinstance(bench, Benchmark) and bench.name == name
    files = bench.seed_files()
    assert set(files) == set(bench.editable_files)
    with pytest.raises(KeyError):
        bench.seed_files("no-such-variant")
    assert all(p.is_file() for p in bench.harness_files())
    # what runs in the sandbox is part of the harness's identity
    assert set(bench.sandbox_files()) <= set(bench.harness_files())
    for dist in bench.distributions:
        assert importlib.metadata.version(dist)
    variants = [bench.neutral_variant(files, i) for i in range(2)]
    assert variants[0] != variants[1] and files not in variants
    assert all(set(v) == set(files) for v in variants)
    space = bench.search_space()
    seeds = [files]  # a catalogue may serve several seed variants: each entry fits one
    for variant in ("strong", "weak"):
        try:
            seeds.append(bench.seed_files(variant))
        except KeyError:
            pass
    for knob in space.knobs:
        assert any(re.search(rf"^{knob.name} = ", f[knob.file], re.M) for f in seeds), knob.name
    for edit in space.edits:
        assert edit.file in bench.editable_files and edit.description
        assert all(len(v) > 0 for v in edit.params.values())
        params = {k: v[0] for k, v in edit.params.items()}
        changed = []
        for f in seeds:
            try:
                changed.append(edit.apply(f[edit.file], **params) != f[edit.file])
            except EditNotApplicable:
                pass
        assert changed and all(changed), edit.name
