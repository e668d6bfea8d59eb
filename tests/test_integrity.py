"""What trusted code compares around a trial: file digests and the tripwire."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autolab import integrity
from autolab.integrity import changed, file_digests, tripwire
from autolab.sandbox import site_dirs


def test_digests_cover_folders_recursively_and_change_with_content(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "x.txt").write_text("x")
    (tmp_path / "a" / "b" / "y.txt").write_text("y")
    single = tmp_path / "single.txt"
    single.write_text("s")
    before = file_digests([tmp_path / "a", single])
    assert set(before) == {str(tmp_path / "a" / "x.txt"), str(tmp_path / "a" / "b" / "y.txt"),
                           str(single)}
    assert changed(before, file_digests([tmp_path / "a", single])) == []
    (tmp_path / "a" / "b" / "y.txt").write_text("Y")
    (tmp_path / "a" / "new.txt").write_text("n")
    single.unlink()
    after = file_digests([tmp_path / "a", single])
    assert changed(before, after) == sorted([str(tmp_path / "a" / "b" / "y.txt"),
                                             str(tmp_path / "a" / "new.txt"), str(single)])
    assert after[str(single)].startswith("unreadable")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "project"
    for pkg in ("pkg_a", "pkg_b"):
        (root / pkg / "sub").mkdir(parents=True)
        (root / pkg / "mod.py").write_text("X = 1\n")
        (root / pkg / "sub" / "deep.py").write_text("Y = 2\n")
    monkeypatch.setattr(integrity, "PROJECT", root)
    monkeypatch.setattr(integrity, "PROJECT_PACKAGES", ("pkg_a", "pkg_b"))
    return root


def bump(path: Path, text: str | None = None) -> None:
    """Rewrite with the same size and a later mtime, or with new text."""
    st = path.stat()
    path.write_text(path.read_text() if text is None else text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


@pytest.mark.parametrize("change", ["edit-same-size", "append", "new-file", "new-bytecode",
                                    "delete"])
def test_tripwire_sees_any_change_to_the_project(project: Path, change: str) -> None:
    before = tripwire()
    target = project / "pkg_b" / "sub" / "deep.py"
    if change == "edit-same-size":
        bump(target, "Y = 3\n")
    elif change == "append":
        target.write_text(target.read_text() + "Z = 4\n")
    elif change == "new-file":
        (project / "pkg_a" / "evil.py").write_text("")
    elif change == "new-bytecode":
        (project / "pkg_a" / "__pycache__").mkdir()
        (project / "pkg_a" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0")
    else:
        target.unlink()
    diff = changed({k: str(v) for k, v in before.items()},
                   {k: str(v) for k, v in tripwire().items()})
    assert len(diff) == 1 and diff[0].startswith(str(project)), diff


def test_tripwire_is_stable_and_covers_extra_trees(project: Path, tmp_path: Path) -> None:
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "f").write_text("f")
    a, b = tripwire([extra]), tripwire([extra])
    assert a == b and str(extra / "f") in a
    bump(extra / "f")
    assert tripwire([extra])[str(extra / "f")] != a[str(extra / "f")]


def test_tripwire_watches_the_interpreter_startup_hooks() -> None:
    snap = tripwire()
    pth = [p for d in site_dirs() for p in d.glob("*.pth")]
    assert pth and all(str(p) in snap for p in pth)
    assert all(any(k.startswith(str(d)) for k in snap) for d in site_dirs() if any(d.iterdir()))
    assert any(k.endswith(("autolab/runner.py",)) for k in snap)  # the real project
