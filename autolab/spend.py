"""What proposals cost: prices, the ledger of paid attempts, and the caps on spending.

The ledger is the archive's `Spend` records, one per attempt that called a paid model
(an attempt cut short by an outage costs too). A campaign's spend is its own records; a
day's spend is every campaign's under the same workdir on that UTC day.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime
from pathlib import Path

from autolab.archive import Archive
from autolab.config import Price, ProposerParams
from autolab.records import Cost, Proposal, Spend


def priced(usage: Cost, price: Price | None) -> Cost:
    """The usage with its dollar figure; a model without a price costs nothing (a local one)."""
    if price is None:
        return usage
    usd = (usage.input_tokens * price.input + usage.output_tokens * price.output
           + usage.cache_write_tokens * price.cache_write
           + usage.cache_read_tokens * price.cache_read) / 1e6
    return usage.model_copy(update={"usd": usd})


def total(costs: Iterable[Cost]) -> Cost:
    out = Cost()
    for c in costs:
        out = out.plus(c)
    return out


def campaign_costs(spend: list[Spend], proposals: Iterable[Proposal]) -> Cost:
    """Every attempt in the ledger, plus proposals that predate it (their own cost)."""
    charged = {s.proposal_id for s in spend}
    return total([s.cost for s in spend] + [p.cost for p in proposals if p.id not in charged])


def day_spend(workdir: Path, day: date | None = None) -> float:
    """Dollars spent on `day` (UTC, default today) by every campaign under workdir."""
    day = day or datetime.now(UTC).date()
    usd = 0.0
    for path in Path(workdir).glob("*/archive/spend/*.json"):
        try:
            s = Spend.model_validate_json(path.read_bytes())
        except (OSError, ValueError):
            continue  # a half-written file of another process: atomic writes make it rare
        if s.created_at.astimezone(UTC).date() == day:
            usd += s.cost.usd
    return usd


def usd_left(params: ProposerParams, archive: Archive, workdir: Path) -> float | None:
    """What may still be spent before the nearer cap; None when no cap is set."""
    left = []
    if params.max_usd_per_campaign is not None:
        spent = campaign_costs(archive.all(Spend), archive.all(Proposal)).usd
        left.append(params.max_usd_per_campaign - spent)
    if params.max_usd_per_day is not None:
        left.append(params.max_usd_per_day - day_spend(workdir))
    return max(0.0, min(left)) if left else None


def cap_reached(params: ProposerParams, archive: Archive, workdir: Path) -> str | None:
    """The stop reason when a spending cap is reached, else None."""
    if params.max_usd_per_campaign is not None:
        spent = campaign_costs(archive.all(Spend), archive.all(Proposal)).usd
        if spent >= params.max_usd_per_campaign:
            return (f"proposer spend ${spent:.2f} reached proposer.max_usd_per_campaign="
                    f"${params.max_usd_per_campaign:.2f}")
    if params.max_usd_per_day is not None:
        today = day_spend(workdir)
        if today >= params.max_usd_per_day:
            return (f"today's proposer spend ${today:.2f} (all campaigns under {workdir}) "
                    f"reached proposer.max_usd_per_day=${params.max_usd_per_day:.2f}")
    return None


def estimate_proposal_usd(prefix: int, context: int, price: Price, turns: int = 3,
                          output: int = 800, results: int = 150,
                          prefix_cached: bool = True) -> float:
    """A proposal's price under stated assumptions: `turns` responses of `output` tokens
    each, tool results of `results` tokens, the prefix read from the cache (written
    instead when `prefix_cached` is False) and the conversation cached turn to turn."""
    usd = (prefix * (price.cache_read if prefix_cached else price.cache_write)
           + context * price.cache_write + output * price.output)
    grown = context
    for _ in range(turns - 1):
        new = output + results
        usd += prefix * price.cache_read + grown * price.cache_read
        usd += new * price.cache_write + output * price.output
        grown += new
    return usd / 1e6
