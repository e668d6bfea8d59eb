"""The spending ledger and its caps: per campaign, and per UTC day over every campaign."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from autolab.archive import Archive
from autolab.config import ProposerParams
from autolab.records import Cost, Proposal, Spend
from autolab.spend import campaign_costs, cap_reached, day_spend, usd_left


def spend(archive: Archive, pid: str, usd: float, when: datetime | None = None,
          attempt: int = 1) -> None:
    archive.put(Spend(id=Spend.key(pid, attempt), campaign="c", proposal_id=pid,
                      attempt=attempt, proposer="claude", outcome="ok",
                      cost=Cost(usd=usd, output_tokens=100),
                      created_at=when or datetime.now(UTC)))


def test_campaign_and_day_caps(tmp_path):
    mine, other = Archive(tmp_path / "a" / "archive"), Archive(tmp_path / "b" / "archive")
    spend(mine, "p1", 2.0)
    spend(mine, "p1", 1.0, attempt=2)  # an attempt cut short by an outage counts too
    spend(other, "q1", 4.0)
    spend(other, "q0", 50.0, when=datetime.now(UTC) - timedelta(days=1))  # yesterday
    assert day_spend(tmp_path) == pytest.approx(7.0)
    params = ProposerParams(max_usd_per_campaign=5.0, max_usd_per_day=8.0)
    assert usd_left(params, mine, tmp_path) == pytest.approx(1.0)  # the nearer cap
    assert cap_reached(params, mine, tmp_path) is None
    spend(mine, "p2", 2.5)
    assert cap_reached(params, mine, tmp_path) == (
        "proposer spend $5.50 reached proposer.max_usd_per_campaign=$5.00")
    lax = ProposerParams(max_usd_per_campaign=None, max_usd_per_day=8.0)
    assert "today's proposer spend $9.50" in cap_reached(lax, mine, tmp_path)
    assert usd_left(ProposerParams(max_usd_per_campaign=None, max_usd_per_day=None), mine,
                    tmp_path) is None


def test_proposals_before_the_ledger_still_count():
    old = Proposal(id="p0", campaign="c", thread=0, operator="improve", parents=["s"],
                   rationale="", edits=[], proposer="claude", cost=Cost(usd=0.5))
    new = Proposal(id="p1", campaign="c", thread=0, operator="improve", parents=["s"],
                   rationale="", edits=[], proposer="claude", cost=Cost(usd=0.25))
    ledger = [Spend(id="x", campaign="c", proposal_id="p1", proposer="claude", outcome="ok",
                    cost=Cost(usd=0.25))]
    assert campaign_costs(ledger, [old, new]).usd == pytest.approx(0.75)
