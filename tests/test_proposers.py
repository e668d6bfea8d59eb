"""Behaviour of the knob helpers and the offline proposer on a small fake benchmark."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from autolab.proposers import knobs as knobs_mod
from autolab.proposers.base import CandidateView, HistoryItem, ProposalError, ProposalRequest
from autolab.proposers.knobs import (
    find_knob,
    knob_edits,
    merge3,
    minimal_edit,
    read_knobs,
    set_knob,
)
from autolab.proposers.offline import OfflineProposer
from autolab.records import EditStep, FileEdit
from benchmarks.protocol import (
    CodeEdit,
    Direction,
    EditNotApplicable,
    Knob,
    MetricSpec,
    SearchSpace,
)

TRAIN = '''"""A toy training script."""
import math

LR = 0.003  # learning rate
N_LAYER = 4
ACT = "gelu"  # activation
TAG = "a#b"  # a hash inside a string

MAX_LR = 0.1


def train():
    total = 0.0
    for step in range(10):
        loss = 1.0 / (step + 1)
        total += loss
    return total
'''

KNOBS = (
    Knob(name="LR", file="train.py", kind="float", low=1e-4, high=1e-1, log=True),
    Knob(name="N_LAYER", file="train.py", kind="int", low=1, high=8),
    Knob(name="ACT", file="train.py", kind="categorical", choices=("gelu", "relu", "silu")),
)


def _clip(source: str, value: float) -> str:
    anchor = "    for step in range(10):\n"
    if anchor not in source or "clip =" in source:
        raise EditNotApplicable("no loop to clip, or already clipped")
    return source.replace(anchor, f"    clip = {value}\n{anchor}")


def _cosine(source: str) -> str:
    old = "        loss = 1.0 / (step + 1)\n"
    if old not in source:
        raise EditNotApplicable("loss line changed")
    return source.replace(old, "        loss = math.cos(step) / (step + 1)\n")


def _rmsnorm(source: str) -> str:
    if "class LayerNorm" not in source:
        raise EditNotApplicable("no LayerNorm to replace")
    return source.replace("class LayerNorm", "class RMSNorm")


EDITS = (
    CodeEdit(
        name="clip_grad",
        file="train.py",
        description="Clip gradients.",
        params={"value": (0.5, 1.0)},
        apply=_clip,
    ),
    CodeEdit(name="cosine", file="train.py", description="Cosine loss.", apply=_cosine),
    CodeEdit(name="rmsnorm", file="train.py", description="RMSNorm.", apply=_rmsnorm),
)
SPACE = SearchSpace(knobs=KNOBS, edits=EDITS)
METRIC = MetricSpec(name="val_loss", direction=Direction.MINIMIZE)


def _apply(files: dict[str, str], edits: list[FileEdit]) -> dict[str, str]:
    """The patch step's semantics: whole-file, or a search text that must be unique."""
    out = dict(files)
    for e in edits:
        if e.search is None:
            out[e.path] = e.replace
        else:
            assert out[e.path].count(e.search) == 1, e.search
            out[e.path] = out[e.path].replace(e.search, e.replace, 1)
    return out


def _view(cid: str, text: str = TRAIN, steps: list[EditStep] | None = None, mean=3.0):
    return CandidateView(id=cid, files={"train.py": text}, mean=mean, lineage_steps=steps or [])


def _request(operator: str, parents, history=(), seed: int = 0, base=None, space=SPACE):
    return ProposalRequest(
        benchmark="toy",
        operator=operator,
        thread=0,
        parents=list(parents),
        base=base,
        editable_files=["train.py"],
        metric=METRIC,
        search_space=space,
        history=list(history),
        rng_seed=seed,
    )


# ------------------------------------------------------------------ knobs
def test_read_knobs_types_values():
    values = read_knobs({"train.py": TRAIN}, KNOBS)
    assert values == {"LR": 0.003, "N_LAYER": 4, "ACT": "gelu"}
    assert isinstance(values["N_LAYER"], int) and isinstance(values["LR"], float)
    tag = find_knob(TRAIN, "TAG")
    assert tag is not None and tag.value == "a#b" and tag.comment.strip().startswith("#")
    assert read_knobs({"train.py": "LR = 1\n"}, KNOBS) == {"LR": 1.0}
    assert find_knob(TRAIN, "MAX") is None  # MAX_LR is another name


def test_set_knob_round_trip_keeps_comments():
    text = set_knob(TRAIN, "LR", 0.0012)
    text = set_knob(text, "ACT", "relu")
    text = set_knob(text, "TAG", 'x"y')
    assert "LR = 0.0012  # learning rate\n" in text
    assert 'ACT = "relu"  # activation\n' in text
    assert read_knobs({"train.py": text}, KNOBS) == {"LR": 0.0012, "N_LAYER": 4, "ACT": "relu"}
    assert find_knob(text, "TAG").value == 'x"y'
    changed = [(a, b) for a, b in zip(TRAIN.splitlines(), text.splitlines(), strict=True) if a != b]
    assert len(changed) == 3
    assert set_knob(set_knob(TRAIN, "LR", 0.5), "LR", 0.003) == TRAIN
    with pytest.raises(EditNotApplicable):
        set_knob(TRAIN, "DROPOUT", 0.1)


def test_knob_edits_are_line_search_replace():
    edits = knob_edits({"train.py": TRAIN}, {"LR": 0.001, "N_LAYER": 6}, KNOBS)
    assert [e.search for e in edits] == ["LR = 0.003  # learning rate", "N_LAYER = 4"]
    assert [e.replace for e in edits] == ["LR = 0.001  # learning rate", "N_LAYER = 6"]
    new = _apply({"train.py": TRAIN}, edits)["train.py"]
    assert read_knobs({"train.py": new}, KNOBS)["N_LAYER"] == 6
    # a line that is not unique in its file falls back to one exact whole-file edit
    dup = TRAIN + "# N_LAYER = 4\n"
    (whole,) = knob_edits({"train.py": dup}, {"N_LAYER": 2}, KNOBS)
    assert whole.search is None and "\nN_LAYER = 2\n" in whole.replace


def test_minimal_edit_is_unique_and_exact():
    new = _cosine(TRAIN)
    edit = minimal_edit("train.py", TRAIN, new)
    assert edit.search is not None and len(edit.search) < 60
    assert _apply({"train.py": TRAIN}, [edit])["train.py"] == new


# ------------------------------------------------------------------- tune
def test_tune_moves_one_or_two_knobs_within_bounds():
    proposer = OfflineProposer()
    parent = _view("p")
    for seed in range(10):
        draft = proposer.propose(_request("tune", [parent], seed=seed))
        (step,) = draft.steps
        assert step.name == "tune" and 1 <= len(step.params) <= 2
        new = read_knobs(_apply(parent.files, draft.edits), KNOBS)
        old = read_knobs(parent.files, KNOBS)
        assert {k for k in new if new[k] != old[k]} == set(step.params)
        assert 1e-4 <= new["LR"] <= 1e-1 and 1 <= new["N_LAYER"] <= 8
        assert new["ACT"] in ("gelu", "relu", "silu")
        assert all(name in draft.rationale for name in step.params)
        assert "->" in draft.rationale


def test_tune_is_deterministic_per_seed():
    proposer = OfflineProposer()
    parent = _view("p")
    runs = [proposer.propose(_request("tune", [parent], seed=s)).steps for s in (1, 1, 2, 3, 4)]
    assert runs[0] == runs[1]
    assert len({repr(r) for r in runs[1:]}) > 1


def test_tune_moves_heavier_knobs_more_often():
    weighted = (KNOBS[0], KNOBS[1].model_copy(update={"weight": 8.0}), KNOBS[2])
    proposer = OfflineProposer(max_moved=1)
    parent = _view("p")
    moved = Counter()
    for seed in range(60):
        space = SearchSpace(knobs=weighted)
        (step,) = proposer.propose(_request("tune", [parent], seed=seed, space=space)).steps
        moved.update(step.params.keys())
    # 8:1:1 moves N_LAYER in most proposals (39 of 60 here), the others in the rest.
    assert moved["N_LAYER"] > moved["LR"] + moved["ACT"]  # equal weights: about 20 vs 40
    assert moved["LR"] + moved["ACT"] > 0  # the light knobs still get their turn


def test_tune_never_repeats_a_tried_vector():
    space = SearchSpace(knobs=(Knob(name="N_LAYER", file="train.py", kind="int", low=3, high=6),))
    proposer = OfflineProposer()
    parent = _view("p")
    history: list[HistoryItem] = []
    for seed in range(3):  # 3, 5 and 6 are the only vectors besides the parent's 4
        draft = proposer.propose(_request("tune", [parent], history, seed, space=space))
        history.append(
            HistoryItem(
                candidate_id=f"c{seed}",
                parent_id="p",
                operator="tune",
                steps=draft.steps,
                outcome="rejected",
                mean=3.0,
            )
        )
    assert sorted(h.steps[0].params["N_LAYER"] for h in history) == [3, 5, 6]
    with pytest.raises(ProposalError, match="no untried knob vector"):
        proposer.propose(_request("tune", [parent], history, 99, space=space))


def test_tune_concentrates_where_history_was_good():
    """Low LR scored best in the archive: suggestions for LR should go low."""
    rnd = random.Random(0)
    history = []
    for i in range(30):
        lr = 10 ** rnd.uniform(-4, -1)
        knobs = {"LR": lr, "N_LAYER": rnd.randint(1, 8), "ACT": rnd.choice(["gelu", "relu"])}
        mean = 3.0 + 0.5 * math.log10(lr) + rnd.gauss(0, 0.05)
        history.append(
            HistoryItem(
                candidate_id=f"h{i}",
                parent_id="elsewhere",
                operator="tune",
                steps=[],
                outcome="rejected",
                mean=mean,
                knobs=knobs,
            )
        )
    parent = _view("p", mean=2.0)  # LR 0.003 is the log-midpoint of [1e-4, 1e-1]
    proposer = OfflineProposer()
    lrs = []
    for seed in range(30):
        draft = proposer.propose(_request("tune", [parent], history, seed))
        if "LR" in draft.steps[0].params:
            lrs.append(draft.steps[0].params["LR"])
    assert len(lrs) >= 8  # about half the moves include LR (1 or 2 of 3 knobs move)
    assert sum(lr < 0.003 for lr in lrs) >= 0.8 * len(lrs)  # ~0.5 without history
    assert sorted(lrs)[len(lrs) // 2] < 0.001
    assert "TPE suggestion from 31 scored" in draft.rationale


# ---------------------------------------------------------------- improve
def test_improve_prefers_untried_and_skips_inapplicable():
    proposer = OfflineProposer()
    parent = _view("p", steps=[EditStep(name="clip_grad", params={"value": 0.5})])
    for seed in range(8):
        draft = proposer.propose(_request("improve", [parent], seed=seed))
        assert draft.steps[0].name == "cosine"  # clip_grad is in the lineage already
        assert _apply(parent.files, draft.edits)["train.py"] == _cosine(TRAIN)
        assert "Not yet in this lineage" in draft.rationale


def test_improve_avoids_what_was_tried_on_this_parent():
    proposer = OfflineProposer()
    parent = _view("p")
    tried = HistoryItem(
        candidate_id="c",
        parent_id="p",
        operator="improve",
        steps=[EditStep(name="cosine")],
        outcome="rejected",
        mean=3.1,
    )
    draft = proposer.propose(_request("improve", [parent], [tried], seed=3))
    assert draft.steps[0].name == "clip_grad" and draft.steps[0].params["value"] in (0.5, 1.0)
    clip_tries = [
        HistoryItem(
            candidate_id=f"k{v}",
            parent_id="p",
            operator="improve",
            steps=[EditStep(name="clip_grad", params={"value": v})],
            outcome="failed",
        )
        for v in (0.5, 1.0)
    ]
    with pytest.raises(ProposalError, match="no applicable edit left for parent p"):
        proposer.propose(_request("improve", [parent], [tried, *clip_tries], seed=3))


def test_improve_down_weights_negative_results_elsewhere():
    bad = [
        HistoryItem(
            candidate_id=f"x{i}",
            parent_id=f"other{i}",
            operator="improve",
            steps=[EditStep(name="cosine")],
            outcome="rejected",
            mean=3.5,
        )
        for i in range(5)
    ]
    proposer = OfflineProposer()
    parent = _view("p")
    picks = [
        proposer.propose(_request("improve", [parent], bad, s)).steps[0].name for s in range(40)
    ]
    assert picks.count("cosine") <= 12 and picks.count("clip_grad") >= 28


def test_improve_draws_heavier_edits_first():
    heavy = SearchSpace(edits=(EDITS[0], EDITS[1].model_copy(update={"weight": 8.0})))
    proposer = OfflineProposer()
    picks = Counter(proposer.propose(_request("improve", [_view("p")], seed=s, space=heavy))
                    .steps[0].name for s in range(60))
    # 8:1 draws cosine first in about 8 of 9 proposals; unweighted, about half
    assert picks["cosine"] >= 45 and picks["clip_grad"] >= 1
    plain = Counter(proposer.propose(_request("improve", [_view("p")], seed=s))
                    .steps[0].name for s in range(60))
    assert plain["cosine"] < 45
    draft = proposer.propose(_request("improve", [_view("p")], seed=0, space=SearchSpace(
        edits=(heavy.edits[1],))))
    assert "weights it 8 times" in draft.rationale


def test_improve_tries_an_edits_defaults_first_then_the_rest():
    clip = EDITS[0].model_copy(update={"params": {"value": (0.5, 1.0, 2.0, 4.0)},
                                       "defaults": {"value": 2.0}})
    space = SearchSpace(edits=(clip,))
    proposer = OfflineProposer()
    parent = _view("p")
    firsts = {proposer.propose(_request("improve", [parent], seed=s, space=space))
              .steps[0].params["value"] for s in range(12)}
    assert firsts == {2.0}
    tried = HistoryItem(candidate_id="c", parent_id="p", operator="improve",
                        steps=[EditStep(name="clip_grad", params={"value": 2.0})],
                        outcome="rejected", mean=3.1)
    nexts = {proposer.propose(_request("improve", [parent], [tried], seed=s, space=space))
             .steps[0].params["value"] for s in range(12)}
    assert 2.0 not in nexts and len(nexts) > 1  # then the others, in random order
    # defaults the catalogue does not offer, or offers under another type (2 for 2.0, which
    # the history would key apart), are no first try
    for odd_value in (3.0, 2):
        odd = clip.model_copy(update={"defaults": {"value": odd_value}})
        values = [proposer.propose(_request("improve", [parent], seed=s, space=SearchSpace(
            edits=(odd,)))).steps[0].params["value"] for s in range(12)]
        assert not any(type(v) is type(odd_value) and v == odd_value for v in values)
        assert len(set(values)) > 1


# -------------------------------------------------------------- crossover
def _branches():
    a = set_knob(_cosine(TRAIN), "LR", 0.001)  # A: tuned LR, changed the loss
    b = set_knob(_clip(TRAIN, 0.5), "N_LAYER", 6)  # B: adjacent knob line, added clipping
    va = _view("A", a, [EditStep(name="cosine"), EditStep(name="tune", params={"LR": 0.001})])
    vb = _view("B", b, [EditStep(name="clip_grad", params={"value": 0.5})])
    return va, vb, _view("O")


@pytest.mark.parametrize("git", [True, False])
def test_crossover_merges_both_branches(git, monkeypatch):
    if not git:
        monkeypatch.setattr(knobs_mod.shutil, "which", lambda _: None)
    a, b, base = _branches()
    draft = OfflineProposer().propose(_request("crossover", [a, b], base=base))
    merged = _apply(a.files, draft.edits)["train.py"]
    assert merged == set_knob(set_knob(_clip(_cosine(TRAIN), 0.5), "LR", 0.001), "N_LAYER", 6)
    assert draft.steps == [EditStep(name="clip_grad", params={"value": 0.5})]
    assert "N_LAYER takes B's value 6" in draft.rationale and "clip_grad" in draft.rationale


def test_crossover_knob_changed_by_both_keeps_a():
    a, b, base = _branches()
    b.files["train.py"] = set_knob(b.files["train.py"], "LR", 0.01)
    draft = OfflineProposer().propose(_request("crossover", [a, b], base=base))
    merged = _apply(a.files, draft.edits)["train.py"]
    assert read_knobs({"train.py": merged}, KNOBS) == {"LR": 0.001, "N_LAYER": 6, "ACT": "gelu"}
    assert "A's value is kept" in draft.rationale


@pytest.mark.parametrize("git", [True, False])
def test_crossover_raises_on_real_conflict(git, monkeypatch):
    if not git:
        monkeypatch.setattr(knobs_mod.shutil, "which", lambda _: None)
    a, b, base = _branches()
    b.files["train.py"] = b.files["train.py"].replace("1.0 / (step + 1)", "2.0 / (step + 2)")
    with pytest.raises(ProposalError, match="crossover conflict in train.py"):
        OfflineProposer().propose(_request("crossover", [a, b], base=base))


def test_crossover_that_adds_nothing_is_refused():
    a, _, base = _branches()
    with pytest.raises(ProposalError, match="crossover adds nothing"):
        OfflineProposer().propose(_request("crossover", [a, _view("B")], base=base))


def test_merge3_fallback_agrees_with_git_on_clean_merges():
    base = "".join(f"line {i}\n" for i in range(12))
    a = base.replace("line 2\n", "line two\n").replace("line 9\n", "")
    b = base.replace("line 5\n", "line 5\nextra\n") + "tail\n"
    with_git, conflicts_git = merge3(base, a, b)
    without, conflicts_py = merge3(base, a, b, use_git=False)
    assert conflicts_git == conflicts_py == []
    assert with_git == without
    assert "line two\n" in without and "extra\n" in without and "line 9\n" not in without


# --------------------------------------------------------------------- A/A
def test_aa_proposer_makes_neutral_variants_of_its_parent():
    from autolab.config import ProposerParams
    from autolab.proposers import make_proposer
    from autolab.proposers.aa import AAProposer
    from benchmarks.noop.benchmark import KNOBS as NOOP_KNOBS
    from benchmarks.noop.benchmark import Noop

    proposer = make_proposer(ProposerParams(kind="aa"))
    assert isinstance(proposer, AAProposer) and proposer.free_form is False
    assert make_proposer(ProposerParams(kind="offline")).free_form is False
    seed = Noop().seed_files()
    parent = CandidateView(id="p", files=seed)
    drafts = [
        proposer.propose(
            ProposalRequest(benchmark="noop", operator="improve", thread=0, parents=[parent],
                            editable_files=["solution.py"], metric=Noop.metric,
                            search_space=Noop().search_space(), rng_seed=i)  # fmt: skip
        )
        for i in (3, 4)
    ]
    texts = [_apply(seed, d.edits)["solution.py"] for d in drafts]
    assert texts[0] != texts[1] and seed["solution.py"] not in texts  # each its own identity
    for text in texts:  # ... and the same value: only the randomness differs
        assert read_knobs({"solution.py": text}, NOOP_KNOBS) == read_knobs(seed, NOOP_KNOBS)
        assert text.startswith(seed["solution.py"].rstrip("\n"))
    assert [d.steps[0].params["variant"] for d in drafts] == [3, 4]
