"""A real, model-free search over a benchmark's declared search space.

Three operators, each deterministic given the request (rng_seed plus its content):
`tune` moves one or two knobs where a TPE model of the archive's history points,
`improve` applies a named code edit not yet tried on the parent, and `crossover`
grafts one branch's changes onto another with a three-way merge. The proposer keeps
no state: everything it learns from is in the request, so a resumed campaign needs
nothing but its archive.
"""

from __future__ import annotations

import itertools
import random
import time
from collections import Counter
from collections.abc import Iterable, Mapping

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import TPESampler
from optuna.trial import TrialState

from autolab.proposers.base import (
    NEGATIVE_OUTCOMES,
    CandidateView,
    Draft,
    ProposalError,
    ProposalRequest,
    RelatedResult,
)
from autolab.proposers.knobs import (
    KnobValue,
    format_value,
    knob_edits,
    merge_file,
    minimal_edit,
    read_knobs,
    typed_value,
)
from autolab.records import EditStep, FileEdit
from benchmarks.protocol import CodeEdit, EditNotApplicable, Knob

Vector = tuple[tuple[str, KnobValue], ...]


class OfflineProposer:
    """Proposer for `tune`, `improve` and `crossover` without any language model."""

    name = "offline"
    operators = frozenset({"tune", "improve", "crossover"})
    free_form = False  # it applies catalogue edits and knob values, never new code

    def __init__(self, n_startup_trials: int = 5, max_moved: int = 2, retries: int = 12,
                 delay_s: float = 0.0):
        self.n_startup_trials = n_startup_trials
        self.max_moved = max_moved
        self.retries = retries
        self.delay_s = delay_s  # stands for a language model's thinking time in measurements

    def propose(self, request: ProposalRequest) -> Draft:
        if self.delay_s:
            time.sleep(self.delay_s)
        ids = ",".join(p.id for p in request.parents)
        rng = random.Random(f"{request.rng_seed}|{request.operator}|{ids}")
        if request.operator == "tune":
            return self._tune(request, rng)
        if request.operator == "improve":
            return self._improve(request, rng)
        if request.operator == "crossover":
            return self._crossover(request)
        raise ProposalError(f"offline proposer has no operator {request.operator!r}")

    # ------------------------------------------------------------------ tune
    def _tune(self, request: ProposalRequest, rng: random.Random) -> Draft:
        parent = _single_parent(request)
        knobs = [k for k in request.search_space.knobs if k.file in request.editable_files]
        current = read_knobs(parent.files, knobs)
        knobs = [k for k in knobs if k.name in current]
        if not knobs:
            raise ProposalError(f"parent {parent.id} has no tunable knob in its editable files")
        dists = {k.name: _distribution(k) for k in knobs}
        sampler = TPESampler(seed=rng.randrange(2**31), n_startup_trials=self.n_startup_trials)
        study, n_scored, n_failed = _study_from_history(request, knobs, dists, current, sampler)
        tried = _tried_vectors(request, parent, current, knobs)
        for _ in range(self.retries):
            params = study.ask(dists).params
            suggestion = {k.name: _clean(k, dists[k.name], params[k.name]) for k in knobs}
            differing = [k.name for k in knobs if suggestion[k.name] != current[k.name]]
            n_move = min(rng.randint(1, self.max_moved), len(differing))
            # Weighted draw without replacement (Efraimidis-Spirakis keys): a knob the
            # benchmark weights w times higher is w times likelier to move first.
            weight = {k.name: k.weight for k in knobs}
            keyed = sorted(differing, key=lambda n: -(rng.random() ** (1.0 / weight[n])))
            moved = sorted(keyed[:n_move])
            vector = {**current, **{name: suggestion[name] for name in moved}}
            if moved and _key(vector) not in tried:
                break
        else:
            raise ProposalError(
                f"tune found no untried knob vector for parent {parent.id} "
                f"after {self.retries} suggestions ({len(tried) - 1} already tried)"
            )
        changes = {name: vector[name] for name in moved}
        how = (
            f"TPE suggestion from {n_scored} scored and {n_failed} failed configurations"
            if n_scored >= self.n_startup_trials
            else f"random exploration (only {n_scored} scored configurations; "
            f"TPE models from {self.n_startup_trials})"
        )
        moves = ", ".join(
            f"{n} {format_value(current[n])} -> {format_value(v)}" for n, v in changes.items()
        )
        kept = ", ".join(f"{n}={format_value(current[n])}" for n in current if n not in changes)
        rationale = (
            f"tune {moves}: {how}, {request.metric.direction.value} {request.metric.name}; "
            f"parent {parent.id} mean {_fmt(parent.mean)}. Only {len(changes)} of {len(knobs)} "
            f"knobs move, so the step stays local and its effect is attributable"
            + (f"; unchanged: {kept}." if kept else ".")
        )
        return Draft(
            operator="tune",
            rationale=rationale,
            steps=[EditStep(name="tune", params=changes)],
            edits=knob_edits(parent.files, changes, knobs),
        )

    # --------------------------------------------------------------- improve
    def _improve(self, request: ProposalRequest, rng: random.Random) -> Draft:
        parent = _single_parent(request)
        lineage = {s.name for s in parent.lineage_steps}
        tried_here = {
            (s.name, _params_key(s.params))
            for item in request.history
            if item.parent_id == parent.id
            for s in item.steps
        }
        tried_names = {name for name, _ in tried_here}
        elsewhere = [i for i in request.history if i.parent_id != parent.id]
        negative = Counter(
            s.name for i in elsewhere if i.outcome in NEGATIVE_OUTCOMES for s in i.steps
        )
        accepted = Counter(s.name for i in elsewhere if i.outcome == "accepted" for s in i.steps)
        # on related problems (a family campaign) or in earlier campaigns on this benchmark
        # (campaign.learn_from): a technique that won there comes first, with the
        # parameters that won; one that lost there is drawn less often
        carried = Counter(s for _, s in {(r.member, s) for r in request.related
                                         if r.outcome == "accepted" for s in r.steps})
        lost = Counter(s for _, s in {(r.member, s) for r in request.related
                                      if r.outcome in NEGATIVE_OUTCOMES for s in r.steps})
        sources = {s: sorted({r.member for r in request.related if r.outcome == "accepted"
                              and s in r.steps}) for s in carried}
        edits = [
            e
            for e in request.search_space.edits
            if e.file in request.editable_files and e.file in parent.files
        ]

        def order(edit: CodeEdit) -> tuple[int, float]:
            # Tier first (fresh edits before ones in the lineage or tried here), then a
            # weighted random draw: each negative result elsewhere halves the odds or more.
            tier = 2 if edit.name in lineage else 1 if edit.name in tried_names else 0
            if tier == 0 and carried[edit.name] > lost[edit.name] and not negative[edit.name]:
                tier = -1  # won on related problems more often than it lost, not lost here
            weight = edit.weight * (1.0 + 0.5 * (accepted[edit.name] + carried[edit.name])) / (
                1.0 + negative[edit.name] + 0.5 * lost[edit.name])
            return tier, -(rng.random() ** (1.0 / weight))

        skipped: list[str] = []
        for edit in sorted(edits, key=order):
            source = parent.files[edit.file]
            for params in (_won_params(edit, request.related) + _defaults(edit)
                           + _param_combos(edit, rng)):
                if (edit.name, _params_key(params)) in tried_here:
                    continue
                try:
                    new = edit.apply(source, **params)
                except EditNotApplicable:
                    continue
                if new != source:
                    why = _improve_why(edit, lineage, tried_names, negative, accepted)
                    if edit.weight != 1.0:
                        why += (f" The benchmark weights it {edit.weight:g} times the odds "
                                "of an unweighted edit.")
                    if carried[edit.name]:
                        why += (f" Accepted on {carried[edit.name]} related problem(s) or "
                                f"earlier campaign(s) ({', '.join(sources[edit.name])}), so "
                                "tried here before other fresh edits, with the parameters "
                                "that won there first.")
                    if lost[edit.name]:
                        why += (f" Judged worse or failed in {lost[edit.name]} related "
                                "problem(s) or earlier campaign(s), which weighted the draw.")
                    shown = ", ".join(f"{k}={format_value(v)}" for k, v in params.items())
                    rationale = (
                        f"improve: apply {edit.name}({shown}) to {edit.file} on parent "
                        f"{parent.id} (mean {_fmt(parent.mean)}). {edit.description} {why}"
                    )
                    return Draft(
                        operator="improve",
                        rationale=rationale,
                        steps=[EditStep(name=edit.name, params=params)],
                        edits=[minimal_edit(edit.file, source, new)],
                    )
            skipped.append(edit.name)
        raise ProposalError(
            f"no applicable edit left for parent {parent.id} "
            f"(inapplicable or already tried: {', '.join(skipped) or 'none declared'})"
        )

    # ------------------------------------------------------------- crossover
    def _crossover(self, request: ProposalRequest) -> Draft:
        if len(request.parents) != 2 or request.base is None:
            raise ProposalError("crossover needs two parents and their common ancestor")
        a, b = request.parents
        base = request.base
        merged: dict[str, str] = {}
        notes: list[str] = []
        for path in sorted(set(request.editable_files) & (set(a.files) | set(b.files))):
            knobs = [k for k in request.search_space.knobs if k.file == path]
            text, file_notes, conflicts = merge_file(
                base.files.get(path, ""), a.files.get(path, ""), b.files.get(path, ""), knobs
            )
            if conflicts:
                raise ProposalError(f"crossover conflict in {path}: {'; '.join(conflicts)}")
            merged[path] = text
            notes.extend(file_notes)
        a_view = {p: a.files.get(p, "") for p in merged}
        b_view = {p: b.files.get(p, "") for p in merged}
        if merged in (a_view, b_view):
            raise ProposalError(
                f"crossover adds nothing: merging {b.id} into {a.id} reproduces one parent"
            )
        edits = [FileEdit(path=p, replace=t) for p, t in merged.items() if t != a_view[p]]
        steps = [s for s in b.lineage_steps if s not in a.lineage_steps]
        brought = ", ".join(_step_text(s) for s in steps) or "no named steps"
        rationale = (
            f"crossover: graft B={b.id} (mean {_fmt(b.mean)}) onto A={a.id} "
            f"(mean {_fmt(a.mean)}) "
            f"over their common ancestor {base.id}, to test whether the two lines of "
            f"improvement add up. {b.id} brings: {brought}. Files changed relative to "
            f"{a.id}: {', '.join(e.path for e in edits)}."
            + (" " + " ".join(notes) if notes else "")
        )
        return Draft(operator="crossover", rationale=rationale, steps=steps, edits=edits)


# ---------------------------------------------------------------- tune helpers
def _distribution(knob: Knob) -> BaseDistribution:
    if knob.kind == "categorical":
        if not knob.choices:
            raise ProposalError(f"categorical knob {knob.name} declares no choices")
        return CategoricalDistribution(knob.choices)
    if knob.low is None or knob.high is None:
        raise ProposalError(f"knob {knob.name} needs low and high bounds")
    if knob.kind == "int":
        return IntDistribution(int(knob.low), int(knob.high), log=knob.log)
    return FloatDistribution(float(knob.low), float(knob.high), log=knob.log)


def _fits(dist: BaseDistribution, value: object) -> bool:
    """Whether a past value can be shown to the model (bounds may have changed since)."""
    if isinstance(dist, CategoricalDistribution):
        return any(type(c) is type(value) and c == value for c in dist.choices)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(dist, IntDistribution) and value != int(value):
        return False
    return dist.low <= value <= dist.high  # type: ignore[attr-defined]


def _clean(knob: Knob, dist: BaseDistribution, value: KnobValue) -> KnobValue:
    """Round floats to 3 significant digits: readable diffs, and exact repeat detection."""
    if knob.kind == "float":
        rounded = float(f"{float(value):.3g}")
        return min(max(rounded, dist.low), dist.high)  # type: ignore[attr-defined]
    if knob.kind == "int":
        return int(value)
    return value


def _item_knobs(item_knobs: Mapping[str, KnobValue], steps: Iterable[EditStep]) -> dict:
    """A history item's knob values: its recorded vector, else what its tune step set."""
    values = dict(item_knobs)
    for step in steps:
        if step.name == "tune":
            for name, value in step.params.items():
                values.setdefault(name, value)
    return values


def _key(vector: Mapping[str, KnobValue]) -> Vector:
    return tuple(sorted(vector.items()))


def _tried_vectors(
    request: ProposalRequest, parent: CandidateView, current: dict, knobs: list[Knob]
) -> set[Vector]:
    """The parent's own vector plus every vector already proposed from this parent."""
    by_name = {k.name: k for k in knobs}
    tried = {_key(current)}
    for item in request.history:
        if item.parent_id == parent.id:
            values = _item_knobs(item.knobs, item.steps)
            typed = {n: typed_value(by_name[n], v) for n, v in values.items() if n in by_name}
            tried.add(_key({**current, **typed}))
    return tried


def _study_from_history(
    request: ProposalRequest,
    knobs: list[Knob],
    dists: dict[str, BaseDistribution],
    current: dict[str, KnobValue],
    sampler: TPESampler,
) -> tuple[optuna.Study, int, int]:
    """A fresh in-memory study holding every past configuration the archive knows of."""
    by_name = {k.name: k for k in knobs}
    observations: list[tuple[dict, float | None]] = []
    parent = request.parents[0]
    for item in request.history:
        values = _item_knobs(item.knobs, item.steps)
        if item.parent_id == parent.id:
            values = {**current, **values}
        params = {
            n: typed_value(by_name[n], v)
            for n, v in values.items()
            if n in dists and _fits(dists[n], typed_value(by_name[n], v))
        }
        if params and (item.mean is not None or item.outcome == "failed"):
            observations.append((params, item.mean))
    if parent.mean is not None:
        observations.append(({n: v for n, v in current.items() if _fits(dists[n], v)}, parent.mean))
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction=request.metric.direction.value, sampler=sampler)
        for params, value in observations:
            if not params:
                continue
            state = TrialState.COMPLETE if value is not None else TrialState.FAIL
            study.add_trial(
                optuna.trial.create_trial(
                    params=params,
                    distributions={n: dists[n] for n in params},
                    value=value,
                    state=state,
                )
            )
    finally:
        optuna.logging.set_verbosity(verbosity)
    n_scored = sum(1 for _, v in observations if v is not None)
    return study, n_scored, len(observations) - n_scored


# ------------------------------------------------------------- improve helpers
def _params_key(params: Mapping[str, KnobValue]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


def _won_params(edit: CodeEdit, related: list[RelatedResult]) -> list[dict]:
    """The parameters with which the edit was accepted on related problems or in earlier
    campaigns, most recent first; only those the catalogue still offers."""
    out: list[dict] = []
    for r in sorted(related, key=lambda r: r.decided_at, reverse=True):
        if r.outcome != "accepted":
            continue
        for name, params in zip(r.steps, r.step_params, strict=False):
            if name == edit.name and set(params) == set(edit.params) and all(
                    v in edit.params[k] for k, v in params.items()) and params not in out:
                out.append(dict(params))
    return out


def _defaults(edit: CodeEdit) -> list[dict]:
    """The edit's declared first try, where it names a value the catalogue offers for each
    of its parameters."""
    d = edit.defaults
    if not edit.params or set(d) != set(edit.params):
        return []
    # a value the catalogue offers, of the same type: 2 where it offers 2.0 is another
    # spelling, which the history would key apart and so try twice
    if not all(any(type(c) is type(d[k]) and c == d[k] for c in edit.params[k]) for k in d):
        return []
    return [dict(d)]


def _param_combos(edit: CodeEdit, rng: random.Random, cap: int = 64) -> list[dict]:
    """Every combination of the edit's parameter values in random order (at most `cap`)."""
    names = sorted(edit.params)
    combos = [
        dict(zip(names, vals, strict=True))
        for vals in itertools.product(*(edit.params[n] for n in names))
    ]
    rng.shuffle(combos)
    return combos[:cap]


def _improve_why(
    edit: CodeEdit, lineage: set[str], tried: set[str], negative: Counter, accepted: Counter
) -> str:
    parts = []
    if edit.name in lineage:
        parts.append(
            "Every fresh edit is used up or inapplicable; this one is already in the "
            "lineage but applies again with new parameters."
        )
    elif edit.name in tried:
        parts.append("Tried on this parent before, but not with these parameters.")
    else:
        parts.append("Not yet in this lineage nor tried on this parent.")
    if negative[edit.name] or accepted[edit.name]:
        parts.append(
            f"Elsewhere it was accepted {accepted[edit.name]}x and rejected or failed "
            f"{negative[edit.name]}x, which weighted the draw."
        )
    return " ".join(parts)


def _single_parent(request: ProposalRequest) -> CandidateView:
    if not request.parents:
        raise ProposalError(f"{request.operator} needs a parent")
    return request.parents[0]


def _step_text(step: EditStep) -> str:
    args = ", ".join(f"{k}={format_value(v)}" for k, v in step.params.items())
    return f"{step.name}({args})"


def _fmt(value: float | None) -> str:
    return "unscored" if value is None else f"{value:.4g}"
