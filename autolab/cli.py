"""The `autolab` command: run (start or resume), status, report, propose --dry-run, prepare,
aa-test, redteam."""

from __future__ import annotations

import os

for _key, _value in {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_LOGGING_LEVEL": "WARNING",
}.items():
    os.environ.setdefault(_key, _value)

import json  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import typer  # noqa: E402
from rich.console import Console  # noqa: E402

from autolab.config import Params, ParamsError, load_params  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()

PARAMS = typer.Option(Path("params.yaml"), "--params", "-p", help="campaign parameters")


def _params(path: Path, overrides: dict | None = None) -> Params:
    try:
        return load_params(path, overrides)
    except ParamsError as err:
        console.print(f"[red]invalid parameters[/red]\n{err}", highlight=False)
        raise typer.Exit(2) from None


def _overrides(benchmark: str | None, name: str | None, max_proposals: int | None) -> dict:
    campaign: dict = {}
    if benchmark:
        campaign["benchmark"] = benchmark
    if name:
        campaign["name"] = name
    if max_proposals is not None:
        campaign["max_proposals"] = max_proposals
    return {"campaign": campaign} if campaign else {}


def _run_campaign(params: Path, overrides: dict, confirm: bool = True) -> None:
    """The campaign flow; a refusal (changed settings, missing isolation) is one clear line."""
    from autolab.lab import open_lab
    from autolab.sandbox import SandboxError
    from flows.campaign import campaign
    from tasks.prepare import CampaignRefused, preflight

    try:
        preflight(open_lab(load_params(params, overrides)))
        campaign(params_path=str(params), overrides=overrides, confirm=confirm)
    except (CampaignRefused, SandboxError) as err:
        console.print(f"[red]refused[/red]: {err}", highlight=False)
        raise typer.Exit(2) from None


@app.command()
def run(
    benchmark: str = typer.Argument(None, help="benchmark name (default: params.yaml's)"),
    params: Path = PARAMS,
    name: str = typer.Option(None, help="campaign name; an existing one is resumed"),
    max_proposals: int = typer.Option(None, help="override campaign.max_proposals"),
) -> None:
    """Start a campaign, or resume it where it stopped."""
    overrides = _overrides(benchmark, name, max_proposals)
    p = _params(params, overrides)  # fail before anything runs
    _run_campaign(params, overrides)
    from autolab.summary import campaign_summary

    console.print(campaign_summary(p), highlight=False)


@app.command("aa-test")
def aa_test(
    benchmark: str = typer.Argument(..., help="benchmark name"),
    n: int = typer.Option(100, "--n", help="A/A candidates to evaluate"),
    params: Path = PARAMS,
    name: str = typer.Option(None, help="campaign name (default: BENCHMARK-aa)"),
    minutes: float = typer.Option(None, help="stop starting candidates after this long"),
    min_gain: float = typer.Option(
        0.0, help="gain a candidate must exceed; 0 tests the design where its error rate is "
        "largest (a positive min_gain only lowers it)"),
) -> None:
    """False-accept rate of the real evaluation: N candidates equal in effect to their parent."""
    from autolab.aa import aa_summary, render_aa

    campaign = {"benchmark": benchmark, "name": name or f"{benchmark}-aa", "max_proposals": n,
                "threads": 1, "patience": 0}
    if minutes is not None:
        campaign["max_wall_clock_min"] = minutes
    overrides = {"campaign": campaign, "proposer": {"kind": "aa", "operators": {"improve": 1.0}},
                 "evaluation": {"min_gain": min_gain}}
    p = _params(params, overrides)
    _run_campaign(params, overrides, confirm=False)
    summary = aa_summary(p)
    out = p.paths.reports / p.campaign.name / "aa_test.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1))
    console.print(render_aa(summary), highlight=False)
    console.print(f"written: {out}")


@app.command()
def redteam(
    benchmark: str = typer.Argument(..., help="benchmark name"),
    params: Path = PARAMS,
    corpus: Path = typer.Option(None, help="folder of hacks (default: tests/redteam/BENCHMARK, "
                                "a -cpu preset sharing its benchmark's)"),
    isolation: str = typer.Option(None, help="sandbox mode to test (default: the strongest)"),
    only: list[str] = typer.Option(None, help="run only these hacks (by name)"),
    keep: Path = typer.Option(None, help="keep each mode's campaign under this folder"),
    without_static_scan: bool = typer.Option(
        False, help="turn audit level 0 off, to see what the sandbox, the guard and the later "
        "levels do with each hack on their own"),
) -> None:
    """Run the red-team corpus through the real loop under the strongest isolation and the
    fallback; exit 1 if a hack escapes or an honest candidate is flagged."""
    from autolab.integrity import PROJECT
    from autolab.redteam import load_corpus, render
    from flows.redteam import default_modes
    from flows.redteam import redteam as run_corpus

    overrides: dict = {"campaign": {"benchmark": benchmark}}
    if without_static_scan:
        overrides |= {"audit": {"static_scan": False}, "proposer": {"kind": "offline"}}
    p = _params(params, overrides)
    hacks = load_corpus(corpus or PROJECT / "tests" / "redteam" / benchmark.removesuffix("-cpu"))
    if only:
        hacks = [h for h in hacks if h.name in only]
    rows = []
    for mode in [isolation] if isolation else default_modes():
        label = f"{mode}-L0off" if without_static_scan else mode
        console.print(f"red team: {len(hacks)} entries under {label}", highlight=False)
        folder = keep / label if keep else None
        if folder is not None:
            if folder.exists() and any(folder.iterdir()):
                console.print(f"[red]refused[/red]: {folder} is not empty", highlight=False)
                raise typer.Exit(2)
            folder.mkdir(parents=True, exist_ok=True)
        rows += [replace(r, isolation=label) for r in run_corpus(p, hacks, mode, folder)]
    print(render(rows), flush=True)
    out = p.paths.reports / "redteam" / f"{benchmark}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([r.__dict__ for r in rows], indent=1))
    console.print(f"written: {out}")
    raise typer.Exit(0 if all(r.ok for r in rows) else 1)


@app.command()
def status(params: Path = PARAMS, name: str = typer.Option(None)) -> None:
    """Progress of a campaign: proposals, accepted, failed, best, budget left."""
    from autolab.archive import Archive
    from autolab.report import campaign_status, render_status
    from benchmarks import get_benchmark

    p = _params(params, _overrides(None, name, None))
    root = p.paths.workdir / p.campaign.name / "archive"
    if not (root / "campaign.json").exists():
        console.print(f"no campaign {p.campaign.name!r} under {p.paths.workdir}")
        raise typer.Exit(1)
    metric = get_benchmark(p.campaign.benchmark).metric
    console.print(render_status(campaign_status(Archive(root), p, metric)))


@app.command()
def report(params: Path = PARAMS, name: str = typer.Option(None)) -> None:
    """Write the Markdown report and the best-so-far plot of a campaign."""
    from autolab.archive import Archive
    from autolab.report import build_report
    from benchmarks import get_benchmark

    p = _params(params, _overrides(None, name, None))
    root = p.paths.workdir / p.campaign.name / "archive"
    if not (root / "campaign.json").exists():
        console.print(f"no campaign {p.campaign.name!r} under {p.paths.workdir}")
        raise typer.Exit(1)
    metric = get_benchmark(p.campaign.benchmark).metric
    path = build_report(Archive(root), p, metric, p.paths.reports / p.campaign.name)
    console.print(f"report: {path}")


@app.command()
def propose(
    params: Path = PARAMS,
    name: str = typer.Option(None, help="campaign name (default: params.yaml's)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print what the model would be sent"),
    operator: str = typer.Option(None, help="show this operator instead of the policy's pick "
                                 "(draft, improve, debug, crossover, tune)"),
) -> None:
    """Show the exact system prompt, tools and context an LLM proposer would receive for the
    campaign's next proposal, with its token count. Sends nothing and writes nothing."""
    from autolab.dry_run import dry_run_text

    if not dry_run:
        console.print("only --dry-run is available: proposals are made by `autolab run`")
        raise typer.Exit(2)
    if operator and operator not in ("draft", "improve", "debug", "crossover", "tune"):
        console.print(f"[red]unknown operator {operator!r}[/red]", highlight=False)
        raise typer.Exit(2)
    print(dry_run_text(_params(params, _overrides(None, name, None)), operator))


@app.command()
def prepare(benchmark: str = typer.Argument(None), params: Path = PARAMS) -> None:
    """Prepare a benchmark's data splits and export its seed solutions (DVC stage)."""
    from autolab.archive import atomic_write
    from benchmarks import get_benchmark

    p = _params(params, _overrides(benchmark, None, None))
    bench = get_benchmark(p.campaign.benchmark)
    out = p.paths.prepared_dir / bench.name
    data_dir = p.paths.data_dir if p.paths.data_dir.exists() else None
    info = bench.prepare(data_dir, (out / "data").resolve())
    for path, text in bench.seed_files(p.campaign.seed_variant).items():
        atomic_write(out / "seeds" / p.campaign.seed_variant / path, text.encode())
    console.print(f"prepared {bench.name}: {info}")


if __name__ == "__main__":
    app()
