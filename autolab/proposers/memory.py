"""Research memory: what an LLM proposer is told about the campaign so far.

Built from the proposal request alone (itself derived from the archive): the task, the
files being edited, the parent's lineage, what was already tried on this parent, the best
candidates and their diffs, negative results and failures elsewhere, recent trials and the
parent's profile. Each section has a priority; when the whole exceeds its token budget,
items of the lowest-priority sections go first, and the context says what was left out.
"""

from __future__ import annotations

import bisect
import difflib
import functools
import itertools
import math
import operator
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pydantic import BaseModel, Field

from autolab.proposers.base import (
    NEGATIVE_OUTCOMES,
    CandidateView,
    HistoryItem,
    ProposalRequest,
)

CHARS_PER_TOKEN = 3.5  # local estimate for code and English; slightly over-counts tokens
NEGATIVE = NEGATIVE_OUTCOMES
DIFF_CHARS = 2500  # per diff shown
MAX_ITEMS = {"best": 3, "tried_here": 12, "negative": 15, "failures": 8, "recent": 10}


def estimate_tokens(text: str) -> int:
    """Tokens of `text` without asking a server: about 3.5 characters per token."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


class Section(BaseModel):
    """A titled list of items; items are ordered most useful first."""

    key: str
    title: str
    priority: int = Field(description="higher is kept longer; required sections are never cut")
    items: list[str]
    required: bool = False
    note_if_cut: str = ""

    def render(self) -> str:
        return f"## {self.title}\n\n" + "\n".join(self.items)


class Context(BaseModel):
    text: str
    notes: list[str] = Field(default_factory=list, description="what was trimmed, and why")
    tokens: int = Field(description="local estimate")


def fit(sections: list[Section], budget: int) -> Context:
    """Drop items from the lowest-priority sections until the estimate fits the budget,
    then put back, most important first, what fits again (a large item cut late may leave
    room for small ones cut before it)."""
    kept = [s.model_copy(deep=True) for s in sections if s.items]
    dropped: dict[str, list[str]] = defaultdict(list)

    def size() -> int:
        return estimate_tokens("\n\n".join(s.render() for s in kept if s.items))

    for section in sorted((s for s in kept if not s.required), key=lambda s: s.priority):
        while section.items and size() > budget:
            dropped[section.key].insert(0, section.items.pop())
    for section in sorted(kept, key=lambda s: -s.priority):
        for item in list(dropped[section.key]):
            section.items.append(item)
            if size() > budget:
                section.items.pop()
            else:
                dropped[section.key].remove(item)
    notes = []
    for s in sections:
        if n := len(dropped.get(s.key, [])):
            left = f"all {n}" if n == len(s.items) else f"{n} of {len(s.items)}"
            notes.append(f"{s.title}: {left} item(s) left out" +
                         (f" ({s.note_if_cut})" if s.note_if_cut and n == len(s.items) else ""))
    body = "\n\n".join(s.render() for s in kept if s.items)
    if notes:
        body += (f"\n\n## Trimmed to fit {budget} tokens\n\n"
                 + "\n".join(f"- {n}" for n in notes))
    if size() > budget:
        notes.append(f"the required sections alone exceed the {budget}-token budget")
    return Context(text=body, notes=notes, tokens=estimate_tokens(body))


# -- where things are in the history ----------------------------------------------------


class HistoryIndex:
    """Where things are in a history (positions in it), for the sections that pick a few
    items out of many: the items on each parent, the last item of each candidate, the
    failures, and the negative results by idea, ranked as `negative_section` ranks them.

    Kept from one request to the next (`indexed`) and brought up to date from the items
    that changed: a campaign's history grows at its end, and an item shown again with a
    new mean is another object at the same place with the same idea, parent and outcome."""

    def __init__(self) -> None:
        self.items: list[HistoryItem] = []
        self.keys: list[tuple[str, str | None, str, str]] = []  # parent, candidate, outcome, idea
        self.by_parent: dict[str, list[int]] = defaultdict(list)
        self.last_of: dict[str, list[int]] = defaultdict(list)  # candidate -> its items
        self.failures: list[int] = []  # failed or refused
        self.negative: dict[str, list[int]] = {}  # idea -> its negative results (of a candidate)
        self.ranked: dict[int, list[tuple[int, str]]] = {}  # count -> (first place, idea), sorted

    def update(self, history: list[HistoryItem]) -> None:
        """Make the index that of `history`: items that kept their place and key are taken
        as they are; from the first that did not, the index is made again."""
        known = len(self.items)
        if len(history) >= known:  # most often: the same items, and new ones at the end
            new = history[known:]
            self.items += new
            same = history == self.items  # the same objects (or equal ones), no copy made
            del self.items[known:]
            if same:
                for item in new:
                    self.add(item)
                return
        keep = common = min(len(history), known)
        for at in itertools.compress(range(common), map(operator.is_not, self.items, history)):
            if self.key(history[at]) != self.keys[at]:
                keep = at
                break
        self.items[:keep] = history[:keep]
        while len(self.items) > keep:
            self.drop()
        for item in history[keep:]:
            self.add(item)

    @staticmethod
    def key(item: HistoryItem) -> tuple[str, str | None, str, str]:
        return (item.parent_id, item.candidate_id, item.outcome, idea_of(item))

    def add(self, item: HistoryItem) -> None:
        at, key = len(self.items), self.key(item)
        parent, cid, outcome, idea = key
        self.items.append(item)
        self.keys.append(key)
        self.by_parent[parent].append(at)
        if cid:
            self.last_of[cid].append(at)
        if outcome in ("failed", "refused"):
            self.failures.append(at)
        if outcome in NEGATIVE and cid is not None:
            mine = self.negative.setdefault(idea, [])
            if mine:
                self.rank(len(mine), mine[0], idea, -1)
            mine.append(at)
            self.rank(len(mine), mine[0], idea, +1)

    def drop(self) -> None:
        """Take the last item out."""
        parent, cid, outcome, idea = self.keys.pop()
        self.items.pop()
        _pop(self.by_parent, parent)
        if cid:
            _pop(self.last_of, cid)
        if outcome in ("failed", "refused"):
            self.failures.pop()
        if outcome in NEGATIVE and cid is not None:
            mine = self.negative[idea]
            self.rank(len(mine), mine[0], idea, -1)
            mine.pop()
            if mine:
                self.rank(len(mine), mine[0], idea, +1)
            else:
                del self.negative[idea]

    def rank(self, count: int, first: int, idea: str, sign: int) -> None:
        """Put an idea into (+1) or take it out of (-1) the ideas seen `count` times."""
        bucket = self.ranked.setdefault(count, [])
        if sign > 0:
            bisect.insort(bucket, (first, idea))
            return
        del bucket[bisect.bisect_left(bucket, (first, idea))]
        if not bucket:
            del self.ranked[count]

    def negative_groups(self, here: str, limit: int) -> list[tuple[str, list[int]]]:
        """The `limit` ideas with most negative results not on `here`, each with those
        results' places: most first, then in the order of their first result."""
        mine: dict[str, set[int]] = defaultdict(set)  # ideas with results on `here`
        for at in self.by_parent.get(here, ()):
            _, cid, outcome, idea = self.keys[at]
            if outcome in NEGATIVE and cid is not None:
                mine[idea].add(at)
        top: list[tuple[int, int, str, list[int]]] = []
        ranked = ((count, first, idea) for count in sorted(self.ranked, reverse=True)
                  for first, idea in self.ranked[count] if idea not in mine)
        for count, first, idea in itertools.islice(ranked, limit):
            top.append((-count, first, idea, self.negative[idea]))
        for idea, skipped in mine.items():
            kept = [at for at in self.negative[idea] if at not in skipped]
            if kept:
                top.append((-len(kept), kept[0], idea, kept))
        top.sort(key=lambda t: t[:2])
        return [(idea, kept) for _, _, idea, kept in top[:limit]]


def _pop(index: dict[str, list[int]], key: str) -> None:
    index[key].pop()
    if not index[key]:
        del index[key]


_INDEXES: dict[str, HistoryIndex] = {}  # by the proposal of a history's first item
_INDEX_LOCK = threading.Lock()
MAX_INDEXES = 8


@contextmanager
def indexed(history: list[HistoryItem]) -> Iterator[HistoryIndex]:
    """The index of `history`, brought up to date from the one kept for the same campaign
    (whose history starts with the same proposal); held by this thread until the block
    ends."""
    with _INDEX_LOCK:
        key = history[0].proposal_id if history else ""
        index = _INDEXES.pop(key, None) or HistoryIndex()
        _INDEXES[key] = index  # the newest last
        while len(_INDEXES) > MAX_INDEXES:
            del _INDEXES[next(iter(_INDEXES))]
        index.update(history)
        yield index


# -- the sections -------------------------------------------------------------------------


def short(cid: str | None) -> str:
    return (cid or "-")[:8]


def fmt(value: float | None) -> str:
    return "unscored" if value is None else f"{value:.4g}"


def idea_of(item: HistoryItem) -> str:
    """A past proposal's idea: its named steps (an LLM's label, the catalogue's edit, tune)."""
    if not item.steps:
        return item.operator
    return "; ".join(
        s.name + ("(" + ", ".join(f"{k}={v}" for k, v in s.params.items()) + ")"
                  if s.params else "")
        for s in item.steps
    )


def normalise_idea(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def diff_text(old: dict[str, str], new: dict[str, str], limit: int = DIFF_CHARS) -> str:
    """The unified diff of two snapshots; the same few (the best candidates against the
    seed) come up proposal after proposal, so recent ones are kept."""
    return _diff(tuple(old.items()), tuple(new.items()), limit)


@functools.lru_cache(maxsize=256)
def _diff(old_files: tuple[tuple[str, str], ...], new_files: tuple[tuple[str, str], ...],
          limit: int) -> str:
    old, new = dict(old_files), dict(new_files)
    out: list[str] = []
    for path in sorted(old.keys() | new.keys()):
        a, b = old.get(path, ""), new.get(path, "")
        out += difflib.unified_diff(a.splitlines(keepends=True), b.splitlines(keepends=True),
                                    f"a/{path}", f"b/{path}", n=2)
    text = "".join(line if line.endswith("\n") else line + "\n" for line in out)
    return text if len(text) <= limit else text[:limit] + "\n... (diff shortened)\n"


def outcome_line(item: HistoryItem, unit: str) -> str:
    """'rejected: gain -0.003 bits/byte, p = 0.4' or 'failed: <reason>'."""
    if item.outcome == "accepted" or (item.outcome == "rejected" and item.mean is not None):
        gain = "" if item.mean is None or item.parent_mean is None else \
            f"mean {fmt(item.mean)} vs parent {fmt(item.parent_mean)} {unit}".rstrip()
        p = "" if item.p_value is None else f", p = {item.p_value:.2g}"
        verdict = "no significant gain" if item.outcome == "rejected" else "significant gain"
        return f"{item.outcome} ({verdict}): {gain}{p}"
    return f"{item.outcome}: {item.reason[:300]}"


def _file_block(path: str, text: str) -> str:
    return f"### {path}\n```\n{text}\n```"


def task_section(request: ProposalRequest, instructions: str) -> Section:
    lines = [instructions, ""]
    m = request.metric
    better = "lower" if m.direction.value == "minimize" else "higher"
    lines.append(f"Metric: {m.name} ({better} is better). Editable files: "
                 f"{', '.join(request.editable_files)}.")
    if request.seed is not None:
        lines.append(f"Seed solution {short(request.seed.id)}: mean {fmt(request.seed.mean)}.")
    if request.best:
        b = request.best[0]
        lines.append(f"Best scored so far: {short(b.id)}, mean {fmt(b.mean)} over "
                     f"{b.n_trials} trials.")
    roles = {"debug": ("last good ancestor", "failed candidate (you edit this one)"),
             "crossover": ("parent A (you edit this one)", "parent B")}
    names = roles.get(request.operator, ("parent (you edit this one)",))
    for view, role in zip(request.parents, names, strict=False):
        lines.append(f"{role.capitalize()}: {short(view.id)}, mean {fmt(view.mean)} over "
                     f"{view.n_trials} trials.")
    if request.usd_left is not None:
        lines.append(f"Spending left before the cap: ${request.usd_left:.2f}.")
    return Section(key="task", title=f"Task: {request.operator}", priority=100, items=lines,
                   required=True)


def edited(request: ProposalRequest) -> CandidateView:
    """The candidate whose files the model edits: the failed one for debug."""
    return request.parents[1] if request.operator == "debug" else request.parents[0]


def files_section(request: ProposalRequest) -> Section:
    view = edited(request)
    items = [_file_block(p, view.files[p]) for p in request.editable_files if p in view.files]
    return Section(key="files", title=f"Files of {short(view.id)} (the candidate you edit)",
                   priority=80, items=items, note_if_cut="read them with view_file")


def failure_section(request: ProposalRequest) -> Section | None:
    f = request.failure
    if f is None:
        return None
    items = [f"Candidate {short(f.candidate_id)} failed: {f.reason}"]
    if f.log_tail.strip():
        items.append(f"Log tail:\n```\n{f.log_tail.strip()[-3000:]}\n```")
    if request.operator == "debug" and len(request.parents) == 2:
        items.append("Its change against the last good ancestor:\n```diff\n"
                     + diff_text(request.parents[0].files, request.parents[1].files) + "```")
    return Section(key="failure", title="The failure to fix", priority=95, items=items,
                   required=True)


def crossover_section(request: ProposalRequest) -> Section | None:
    if request.operator != "crossover" or request.base is None or len(request.parents) < 2:
        return None
    base = request.base
    items = [f"Common ancestor: {short(base.id)} (mean {fmt(base.mean)})."]
    for label, view in zip("AB", request.parents, strict=False):
        items.append(f"Parent {label} {short(view.id)} (mean {fmt(view.mean)}) changed:\n"
                     f"```diff\n{diff_text(base.files, view.files)}```")
    return Section(key="crossover", title="The two lines of improvement", priority=90,
                   items=items, required=True)


def _with_index(section: Callable[[ProposalRequest, HistoryIndex], Section | None]
                ) -> Callable[..., Section | None]:
    """A section called without an index builds it from the request's history."""
    @functools.wraps(section)
    def call(request: ProposalRequest, index: HistoryIndex | None = None) -> Section | None:
        if index is not None:
            return section(request, index)
        with indexed(request.history) as built:
            return section(request, built)
    return call


@_with_index
def lineage_section(request: ProposalRequest, index: HistoryIndex) -> Section | None:
    view = edited(request)
    items = []
    for cid in view.lineage_ids:
        places = index.last_of.get(cid)
        h = request.history[places[-1]] if places else None
        if h is None:
            items.append(f"- {short(cid)}: seed solution" if request.seed and
                         cid == request.seed.id else f"- {short(cid)}")
            continue
        items.append(f"- {short(cid)} by {h.operator} [{idea_of(h)}]: "
                     f"{outcome_line(h, request.metric.unit)}. {h.rationale[:300]}")
    if len(items) <= 1:
        return None
    return Section(key="lineage", title=f"Lineage of {short(view.id)}, seed first",
                   priority=70, items=items)


@_with_index
def tried_here_section(request: ProposalRequest, index: HistoryIndex) -> Section | None:
    """What was already proposed from this very parent: do not propose it again."""
    view = request.parents[0]
    mine = [request.history[at] for at in reversed(index.by_parent.get(view.id, ()))]
    items = [f"- [{idea_of(h)}] {outcome_line(h, request.metric.unit)}. {h.rationale[:200]}"
             for h in mine[: MAX_ITEMS["tried_here"]]]
    if not items:
        return None
    return Section(key="tried_here", priority=60, items=items,
                   title=f"Already tried on {short(view.id)} (do not repeat these ideas; "
                         "build on what worked, or explain why a retry differs)")


def best_section(request: ProposalRequest) -> Section | None:
    if request.seed is None:
        return None
    items = []
    for view in request.best[: MAX_ITEMS["best"]]:
        if view.id == request.seed.id:
            continue
        items.append(f"### {short(view.id)}: mean {fmt(view.mean)} over {view.n_trials} trials\n"
                     f"```diff\n{diff_text(request.seed.files, view.files)}```")
    if not items:
        return None
    return Section(key="best", title="Best candidates and their diffs against the seed",
                   priority=50, items=items)


@_with_index
def negative_section(request: ProposalRequest, index: HistoryIndex) -> Section | None:
    """Ideas that did not pay off elsewhere, grouped by idea: 'tried X: no gain, p = 0.4';
    those tried most first (then in the order they were first tried)."""
    items = []
    for idea, places in index.negative_groups(request.parents[0].id, MAX_ITEMS["negative"]):
        last = request.history[places[-1]]
        items.append(f"- tried {idea} ({len(places)}x, last on {short(last.parent_id)}): "
                     f"{outcome_line(last, request.metric.unit)}")
    if not items:
        return None
    return Section(key="negative", title="Negative results elsewhere (ideas that did not pay)",
                   priority=40, items=items)


@_with_index
def failures_section(request: ProposalRequest, index: HistoryIndex) -> Section | None:
    here = request.parents[0].id
    newest = (request.history[at] for at in reversed(index.failures))
    failed = itertools.islice((h for h in newest if h.parent_id != here), MAX_ITEMS["failures"])
    items = [f"- {short(h.proposal_id)} {h.operator} [{idea_of(h)}] on {short(h.parent_id)}: "
             f"{h.outcome}: {h.reason[:240]}" for h in failed]
    if not items:
        return None
    return Section(key="failures", title="Recent failures (proposer, build or trial)",
                   priority=30, items=items)


def recent_section(request: ProposalRequest) -> Section | None:
    newest = request.history[::-1][: MAX_ITEMS["recent"]]
    items = [f"- thread {h.thread} {h.operator} [{idea_of(h)}] on {short(h.parent_id)} -> "
             f"{short(h.candidate_id)}: {outcome_line(h, request.metric.unit)}" for h in newest]
    if not items:
        return None
    return Section(key="recent", title="Recent proposals, newest first", priority=20,
                   items=items)


def profile_section(request: ProposalRequest) -> Section | None:
    if not request.profile:
        return None
    items = [f"- {k}: {v:.4g}" for k, v in sorted(request.profile.items())]
    return Section(key="profile", title=f"Profile of {short(request.parents[0].id)}'s trials "
                   "(means)", priority=15, items=items)


def related_section(request: ProposalRequest) -> Section | None:
    """What related problems (a family campaign) and earlier campaigns on this benchmark
    (campaign.learn_from) judged: wins first, then the rest, newest first within each."""
    if not request.related:
        return None
    ordered = sorted(request.related, key=lambda r: r.decided_at, reverse=True)
    ordered.sort(key=lambda r: r.outcome != "accepted")
    items = []
    for r in ordered:
        steps = ", ".join(
            name + ("(" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")" if params
                    else "")
            for name, params in itertools.zip_longest(r.steps, r.step_params, fillvalue={}))
        gain = f", {r.relative_gain:+.2%} over its parent" if r.relative_gain is not None else ""
        items.append(f"- {r.member}: {steps} -> {r.outcome}{gain}")
    return Section(key="related", title="Judged in related problems or earlier campaigns "
                   "(their setups differ: a hint, not evidence here)", priority=35,
                   items=items)


def build_context(request: ProposalRequest, instructions: str, budget: int) -> Context:
    with indexed(request.history) as index:
        made = [failure_section(request), crossover_section(request),
                lineage_section(request, index), tried_here_section(request, index),
                best_section(request), negative_section(request, index),
                failures_section(request, index), recent_section(request),
                profile_section(request), related_section(request)]
    sections = [task_section(request, instructions), files_section(request)]
    sections += [s for s in made if s is not None]
    return fit(sorted(sections, key=lambda s: -s.priority), budget)


def tried_on_parent(request: ProposalRequest) -> dict[str, str]:
    """Ideas with a negative result on the parent being edited: normalised label -> outcome."""
    parent = request.parents[0].id
    fixing = request.failure.candidate_id if request.failure else None  # its idea is kept
    with indexed(request.history) as index:
        mine = [request.history[at] for at in index.by_parent.get(parent, ())]
    out = {}
    for h in mine:
        if h.outcome in NEGATIVE and h.candidate_id != fixing:
            for s in h.steps:
                out[normalise_idea(s.name)] = outcome_line(h, request.metric.unit)
    return out
