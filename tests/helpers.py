"""Helpers for tests that run whole campaigns."""

from __future__ import annotations

from pathlib import Path

import yaml

from autolab.proposers.base import Draft, ProposalRequest
from autolab.records import EditStep, FileEdit


def write_params(
    tmp: Path, benchmark: str = "noop", max_proposals: int = 4, **sections: dict
) -> Path:
    """A params.yaml whose every path lies under tmp."""
    data: dict = {
        "campaign": {
            "name": f"test-{benchmark}",
            "benchmark": benchmark,
            "threads": 2,
            "max_proposals": max_proposals,
            "max_wall_clock_min": 30,
        },
        "evaluation": {"min_seeds": 3, "max_seeds": 4, "test_seeds": 3},
        # one iteration at a time, as the scripted sequences of the tests assume; the
        # engine's tests (and the kill -9 test) set their own
        "engine": {"max_in_flight": 1},
        "paths": {
            "workdir": str(tmp / "runs"),
            "prepared_dir": str(tmp / "artifacts"),
            "mlruns": str(tmp / "mlruns"),
            "reports": str(tmp / "reports"),
            "data_dir": str(tmp / "no-data"),
        },
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class ScriptedProposer:
    """Returns the given whole-file contents of one file, one per call, then repeats the last."""

    name = "scripted"
    operators = frozenset({"tune", "improve", "crossover"})

    def __init__(self, path: str, sources: list[tuple[str, str]]):
        self.path, self.sources, self.calls = path, sources, 0

    def propose(self, request: ProposalRequest) -> Draft:
        label, text = self.sources[min(self.calls, len(self.sources) - 1)]
        self.calls += 1
        path = self.path if not label.startswith("other:") else label.split(":", 1)[1]
        return Draft(
            operator="improve",
            rationale=f"scripted: {label}",
            steps=[EditStep(name=label)],
            edits=[FileEdit(path=path, replace=text)],
        )


# -- integration tests: one Prefect server, campaign solutions ---------------------------

_PREFECT_SERVER: list = []


def prefect_test_server(request) -> None:
    """Start one Prefect server on a temporary database for the whole test process (the
    first call starts it, 15 s or so; later calls reuse it); stopped when the session ends.
    Call it from a module-scoped fixture: `prefect_test_server(request)`."""
    if _PREFECT_SERVER:
        return
    from prefect.testing.utilities import prefect_test_harness

    harness = prefect_test_harness(server_startup_timeout=120)
    harness.__enter__()
    _PREFECT_SERVER.append(harness)

    def stop() -> None:
        try:
            harness.__exit__(None, None, None)
        finally:
            _PREFECT_SERVER.clear()

    request.session.addfinalizer(stop)


def prefect_api_url() -> str:
    """The API of the running test server, for CLI subprocesses (PREFECT_API_URL)."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def noop_solution(value: float, offset: float = 0.5, extra: str = "") -> str:
    """A noop solution.py: the metric is value + offset (lower is better), plus noise."""
    return (
        f"VALUE = {value!r}\nOFFSET = {offset!r}\n\n\ndef value():\n    return VALUE + OFFSET\n"
        + extra
    )


def free_form_off(proposer):
    """Mark a scripted proposer as writing no free-form code (it needs no bwrap)."""
    proposer.free_form = False
    return proposer
