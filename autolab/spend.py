"""What proposals cost: prices, the ledger of paid attempts, and the caps on spending.

The ledger is the archive's `Spend` records, one per attempt that called a paid model
(an attempt cut short by an outage costs too). A campaign's spend is its own records; a
day's spend is every campaign's on that UTC day: those under the same workdir, and those
in the same archive database.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from autolab.archive import Archive, ArchiveError
from autolab.config import Price, ProposerParams
from autolab.db.engine import SQLITE_FILE, sqlite_url
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
    """The sum, as `Cost.plus` adds them one by one (without a model per step)."""
    n_in = n_out = n_write = n_read = 0
    usd = seconds = 0.0
    model = ""
    for c in costs:
        n_in, n_out = n_in + c.input_tokens, n_out + c.output_tokens
        n_write, n_read = n_write + c.cache_write_tokens, n_read + c.cache_read_tokens
        usd, seconds, model = usd + c.usd, seconds + c.seconds, model or c.model
    return Cost(input_tokens=n_in, output_tokens=n_out, cache_write_tokens=n_write,
                cache_read_tokens=n_read, usd=usd, seconds=seconds, model=model)


def campaign_costs(spend: list[Spend], proposals: Iterable[Proposal]) -> Cost:
    """Every attempt in the ledger, plus proposals that predate it (their own cost)."""
    charged = {s.proposal_id for s in spend}
    return total([s.cost for s in spend] + [p.cost for p in proposals if p.id not in charged])


class Ledger:
    """A campaign's ledger kept up to date from the records added since the last look: the
    dollars of its attempts summed as `campaign_costs` sums them (in archive order, then
    the proposals that predate the ledger), and its attempts by proposal."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.marks: dict[type, tuple[int, int]] = {}
        self.clear()

    def clear(self) -> None:
        self.usd = 0.0  # the attempts'
        self.attempts: dict[str, list[Spend]] = {}
        self.uncharged: dict[str, Proposal] = {}  # proposals with no attempt, in archive order

    def update(self, archive: Archive) -> None:
        changes = archive.since({k: self.marks.get(k) for k in (Spend, Proposal)})
        if any(c.whole or not c.at_end for c in changes.values()):  # sums in archive order
            self.clear()
            changes |= archive.since({k: None for k, c in changes.items() if not c.whole})
        self.marks = {k: c.mark for k, c in changes.items()}
        for s in changes[Spend].records:
            self.usd = self.usd + s.cost.usd
            self.attempts.setdefault(s.proposal_id, []).append(s)
            self.uncharged.pop(s.proposal_id, None)
        for p in changes[Proposal].records:
            if p.id not in self.attempts:
                self.uncharged[p.id] = p


_LEDGERS: weakref.WeakKeyDictionary[Archive, Ledger] = weakref.WeakKeyDictionary()


def _ledger(archive: Archive) -> Ledger:
    ledger = _LEDGERS.get(archive)
    if ledger is None:
        ledger = _LEDGERS.setdefault(archive, Ledger())
    return ledger


def campaign_usd(archive: Archive) -> float:
    """`campaign_costs` of the archive's ledger and proposals, in dollars, from running
    sums: the same figure, without a pass over every record."""
    ledger = _ledger(archive)
    with ledger.lock:
        ledger.update(archive)
        usd = ledger.usd
        for p in ledger.uncharged.values():
            usd = usd + p.cost.usd
        return usd


def attempts_of(archive: Archive, proposal_id: str) -> list[Spend]:
    """The proposal's attempts in the ledger, in archive order."""
    ledger = _ledger(archive)
    with ledger.lock:
        ledger.update(archive)
        return list(ledger.attempts.get(proposal_id, ()))


def day_spend(workdir: Path, day: date | None = None, archive: Archive | None = None) -> float:
    """Dollars spent on `day` (UTC, default today) by every campaign under workdir, and by
    every campaign in `archive`'s database (those of other hosts, where it is shared)."""
    day = day or datetime.now(UTC).date()
    attempts: dict[tuple[str, str], Spend] = {}
    for source in _databases(workdir, archive):
        try:
            attempts |= {(s.campaign, s.id): s for s in source.spend_on(day)}
        except (SQLAlchemyError, ArchiveError):
            continue  # another campaign's database that cannot be read now
        finally:
            if source is not archive:
                source.close()
    return sum(s.cost.usd for s in attempts.values())


def _databases(workdir: Path, archive: Archive | None) -> Iterator[Archive]:
    if archive is not None:
        yield archive
    for path in sorted(Path(workdir).glob(f"*/archive/{SQLITE_FILE}")):
        if archive is None or sqlite_url(path) != archive.url:
            try:
                yield Archive(path.parent, create=False)
            except (SQLAlchemyError, ArchiveError):
                continue


def usd_left(params: ProposerParams, archive: Archive, workdir: Path) -> float | None:
    """What may still be spent before the nearer cap; None when no cap is set."""
    left = []
    if params.max_usd_per_campaign is not None:
        spent = campaign_usd(archive)
        left.append(params.max_usd_per_campaign - spent)
    if params.max_usd_per_day is not None:
        left.append(params.max_usd_per_day - day_spend(workdir, archive=archive))
    return max(0.0, min(left)) if left else None


def cap_reached(params: ProposerParams, archive: Archive, workdir: Path) -> str | None:
    """The stop reason when a spending cap is reached, else None."""
    if params.max_usd_per_campaign is not None:
        spent = campaign_usd(archive)
        if spent >= params.max_usd_per_campaign:
            return (f"proposer spend ${spent:.2f} reached proposer.max_usd_per_campaign="
                    f"${params.max_usd_per_campaign:.2f}")
    if params.max_usd_per_day is not None:
        today = day_spend(workdir, archive=archive)
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
