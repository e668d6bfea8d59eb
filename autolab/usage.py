"""Each run's slot usage (autolab.engine.Usage) kept with the campaign's records, read back
for `autolab status`, the report and MLflow."""

from __future__ import annotations

import logging
from datetime import datetime

from autolab.archive import Archive
from autolab.engine import IDLE_REASONS, Usage
from autolab.lab import Lab

log = logging.getLogger(__name__)
PREFIX = "usage/"


def usage_path(run_started: datetime) -> str:
    return f"{PREFIX}{run_started.strftime('%Y%m%dT%H%M%S')}.json"


def record_usage(lab: Lab, run_started: datetime, final: bool = False) -> Usage | None:
    """The run's usage so far, kept under usage/<run start>.json (rewritten as it grows);
    the final one is mirrored to the campaign's MLflow run."""
    if lab.engine is None:
        return None
    usage = lab.engine.usage()
    lab.archive.put_text(usage_path(run_started), usage.model_dump_json(indent=1))
    if not final:
        return usage
    try:
        record = lab.archive.campaign()
        if record is not None:
            lab.tracker.log_usage(record, usage)
    except Exception as err:  # noqa: BLE001 - MLflow is a view
        log.warning("MLflow mirror of the slots' usage failed: %s", err)
    return usage


def runs_usage(archive: Archive) -> list[Usage]:
    """Every run's usage, oldest first."""
    out = []
    for path in archive.text_paths():
        if path.startswith(PREFIX) and (text := archive.read_text(path)):
            out.append(Usage.model_validate_json(text))
    return out


def usage_lines(usage: Usage) -> list[str]:
    """A table: per slot, its duty cycle, busy seconds, trials and idle seconds by reason."""
    dc, rdc = usage.duty_cycle(), usage.duty_cycle(research=True)
    head = (f"slots: {len(usage.slots)}, duty cycle {dc:.3f} over "
            f"{usage.ended - usage.started:.0f} s" if dc is not None else
            f"slots: {len(usage.slots)}, no sample yet")
    if rdc is not None:
        head += f" ({rdc:.3f} while iterations were being started)"
    if usage.trial_overhead_s is not None:
        head += f", {usage.trials} trials, {usage.trial_overhead_s:.3f} s placement per trial"
    research = {s.slot: s.duty_cycle for s in usage.research}
    lines = [head, "| slot | duty cycle | research stage | busy s | trials | idle s by reason |",
             "|---|---|---|---|---|---|"]
    for s in usage.slots:
        idle = ", ".join(f"{r} {s.idle_s[r]:.1f}" for r in IDLE_REASONS if s.idle_s.get(r))
        lines.append(f"| {s.slot} | {_f(s.duty_cycle)} | {_f(research.get(s.slot))} | "
                     f"{s.busy_s:.1f} | {s.trials} | {idle or '-'} |")
    return lines


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"
