"""How strictly each confirmation on the held-out split is judged: the k-th look at a
champion against the seed at alpha / k; the seed against itself (a run that crowned
nothing) is no look."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import tasks.confirm as confirm
from autolab.records import Evaluation


class _Archive:
    def __init__(self):
        self.rows = {}

    def get(self, kind, rid):
        return self.rows.get(rid)

    def all(self, kind):
        return list(self.rows.values())

    def put(self, record):
        self.rows[record.id] = record


@pytest.fixture
def lab(monkeypatch):
    def judged(lab, champ, seed, split, design):
        same = champ == seed
        return Evaluation(id=f"e-{champ}", candidate_id=champ, reference_id=seed, metric="m",
                          values=[1.0] * 3, reference_values=[1.0 if same else 2.0] * 3,
                          alpha=design.alpha, level=design.alpha, split="test",
                          p_value=None if same else 0.001,
                          decision="reject" if same else "accept")

    monkeypatch.setattr(confirm, "run_matched", lambda *a, **k: None)
    monkeypatch.setattr(confirm, "evaluation_of", judged)
    crowned = {"id": "seed"}
    return SimpleNamespace(
        crowned=crowned, archive=_Archive(), campaign=SimpleNamespace(seed_candidate="seed"),
        champion=lambda: crowned["id"], setup=SimpleNamespace(key=lambda: "setup"),
        params=SimpleNamespace(evaluation=SimpleNamespace(alpha=0.01, test_seeds=3)),
        test_seeds=lambda n: [1, 2, 3], single_look=lambda a, n: SimpleNamespace(alpha=a))


def test_each_champion_s_look_is_stricter_and_the_seed_alone_is_no_look(lab):
    first = confirm.confirm_on_test.fn(lab)  # nothing crowned: the seed against itself
    assert not first.is_look and confirm.test_looks(lab) == 0
    lab.crowned["id"] = "a"
    a = confirm.confirm_on_test.fn(lab)
    assert a.evaluation.level == pytest.approx(0.01)  # the first real look: alpha
    assert confirm.confirm_on_test.fn(lab).id == a.id  # the same champion: no new look
    lab.crowned["id"] = "b"
    b = confirm.confirm_on_test.fn(lab)
    assert b.evaluation.level == pytest.approx(0.005)  # the second: alpha / 2
    assert confirm.test_looks(lab) == 2
