import pytest

from autolab.records import FileEdit
from autolab.workspace import (
    PatchFailed,
    PatchRefused,
    apply_edits,
    file_hashes,
    make_candidate,
    unified_diff,
)

PARENT = {"train.py": "LR = 0.1\nprint('hi')\n"}
EDITABLE = ("train.py",)


def test_search_replace_and_whole_file():
    out = apply_edits(
        PARENT, [FileEdit(path="train.py", search="LR = 0.1", replace="LR = 0.2")], EDITABLE
    )
    assert out["train.py"].startswith("LR = 0.2")
    whole = apply_edits(PARENT, [FileEdit(path="train.py", replace="X = 1\n")], EDITABLE)
    assert whole == {"train.py": "X = 1\n"}


def test_edit_to_non_editable_file_is_refused():
    with pytest.raises(PatchRefused, match="non-editable file 'harness.py'"):
        apply_edits(PARENT, [FileEdit(path="harness.py", replace="evil")], EDITABLE)


def test_path_escape_is_refused():
    with pytest.raises(PatchRefused, match="leaves"):
        apply_edits(PARENT, [FileEdit(path="../train.py", replace="x")], ("../train.py",))


def test_missing_or_ambiguous_search_fails_and_noop_is_refused():
    with pytest.raises(PatchFailed, match="not found"):
        apply_edits(PARENT, [FileEdit(path="train.py", search="nope", replace="x")], EDITABLE)
    with pytest.raises(PatchFailed, match="2 times"):
        apply_edits(
            {"train.py": "a\na\n"}, [FileEdit(path="train.py", search="a", replace="b")], EDITABLE
        )
    with pytest.raises(PatchRefused, match="changes nothing"):
        apply_edits(PARENT, [FileEdit(path="train.py", search="LR", replace="LR")], EDITABLE)


def test_candidate_identity_is_content():
    a = make_candidate("b", {"train.py": "x = 1\n"}, [], None)
    b = make_candidate("b", {"train.py": "x = 1\n"}, ["p"], "prop")
    c = make_candidate("b", {"train.py": "x = 2\n"}, [], None)
    assert a.id == b.id != c.id


def test_diff_names_the_file():
    diff = unified_diff(PARENT, {"train.py": "LR = 0.2\nprint('hi')\n"})
    assert "a/train.py" in diff and "-LR = 0.1" in diff and "+LR = 0.2" in diff


def test_diff_against_a_parent_is_kept_on_the_candidate():
    child = {"train.py": "LR = 0.2\nprint('hi')\n"}
    c = make_candidate("b", child, ["p"], "prop", parent_files=PARENT)
    assert "+LR = 0.2" in c.diff and c.parents == ["p"] and c.proposal_id == "prop"
    assert c.files == file_hashes(child)
    assert make_candidate("b", child, [], None).diff == ""
