"""The `autolab` command: run (start or resume), status, report, propose --dry-run, prepare,
aa-test, redteam, archive migrate."""

from __future__ import annotations

import os

for _key, _value in {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    # many iterations at once keep the ephemeral server's SQLite busy: wait, do not fail
    "PREFECT_SERVER_DATABASE_TIMEOUT": "60",
    "PREFECT_SERVER_DATABASE_CONNECTION_TIMEOUT": "30",
    "PREFECT_CLIENT_MAX_RETRIES": "10",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}.items():
    os.environ.setdefault(_key, _value)

import json  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import typer  # noqa: E402
from rich.console import Console  # noqa: E402

from autolab.config import Params, ParamsError, load_params  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
archive_app = typer.Typer(add_completion=False, no_args_is_help=True,
                          help="The campaign archive's database.")
app.add_typer(archive_app, name="archive")
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
    from autolab.archive import ArchiveError
    from autolab.family import chosen_members, member_params
    from autolab.lab import open_lab
    from autolab.sandbox import SandboxError
    from benchmarks import FAMILY_NAMES, get_family
    from flows.campaign import campaign
    from flows.family import prewarm
    from tasks.prepare import CampaignRefused, preflight

    try:
        p = load_params(params, overrides)
        if p.campaign.benchmark in FAMILY_NAMES:  # each member's campaign is checked
            family = get_family(p.campaign.benchmark)
            members = chosen_members(family, p.family.members)
            labs = [open_lab(member_params(p, family.name, m)) for m in members]
            # preflight prepares a resumed member's data; the others wait for their turn
            prewarm(p, family, [m for m, lab in zip(members, labs, strict=True)
                                if lab.archive.campaign() is not None])
            for lab in labs:
                preflight(lab)
        else:
            preflight(open_lab(p))
        campaign(params_path=str(params), overrides=overrides, confirm=confirm)
    except (CampaignRefused, SandboxError, ArchiveError) as err:
        console.print(f"[red]refused[/red]: {err}", highlight=False)
        raise typer.Exit(2) from None


@app.command()
def run(
    benchmark: str = typer.Argument(None, help="benchmark name (default: params.yaml's)"),
    params: Path = PARAMS,
    name: str = typer.Option(None, help="campaign name; an existing one is resumed"),
    max_proposals: int = typer.Option(None, help="override campaign.max_proposals"),
    confirm: bool = typer.Option(True, help="confirm the champion on the test split at the "
                                 "end (--no-confirm: leave it to a later run)"),
) -> None:
    """Start a campaign, or resume it where it stopped."""
    overrides = _overrides(benchmark, name, max_proposals)
    p = _params(params, overrides)  # fail before anything runs
    _run_campaign(params, overrides, confirm=confirm)
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
                "threads": 1, "patience": 0, "learn_from": []}
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


def _started(p: Params):
    """The campaign's archive, or exit 1 saying there is no such campaign."""
    from autolab.archive import ArchiveError, campaign_archive

    try:
        archive = campaign_archive(p, create=False)
    except ArchiveError as err:
        console.print(f"[red]{err}[/red]", highlight=False)
        raise typer.Exit(1) from None
    if archive.campaign() is None:
        console.print(f"no campaign {p.campaign.name!r} in {archive.location}", highlight=False)
        raise typer.Exit(1)
    return archive


@app.command()
def status(params: Path = PARAMS, name: str = typer.Option(None)) -> None:
    """Progress of a campaign: proposals, accepted, failed, best, budget left."""
    from autolab.report import campaign_status, render_status
    from benchmarks import FAMILY_NAMES, get_benchmark, get_family

    p = _params(params, _overrides(None, name, None))
    if p.campaign.benchmark in FAMILY_NAMES:  # the family's table
        from autolab.family import chosen_members, family_summary, render_family

        family = get_family(p.campaign.benchmark)
        summary = family_summary(p, family, chosen_members(family, p.family.members))
        console.print(render_family(summary), highlight=False)
        return
    archive = _started(p)
    metric = get_benchmark(p.campaign.benchmark).metric
    console.print(render_status(campaign_status(archive, p, metric)))


@app.command()
def report(params: Path = PARAMS, name: str = typer.Option(None)) -> None:
    """Write the Markdown report and the best-so-far plot of a campaign."""
    from autolab.report import build_report
    from benchmarks import FAMILY_NAMES, get_benchmark, get_family

    p = _params(params, _overrides(None, name, None))
    if p.campaign.benchmark in FAMILY_NAMES:  # each member's report, then the family's
        from autolab.family import chosen_members, write_reports

        family = get_family(p.campaign.benchmark)
        path, _ = write_reports(p, family, chosen_members(family, p.family.members))
        console.print(f"report: {path}")
        return
    archive = _started(p)
    metric = get_benchmark(p.campaign.benchmark).metric
    path = build_report(archive, p, metric, p.paths.reports / p.campaign.name)
    console.print(f"report: {path}")


@archive_app.command("migrate")
def archive_migrate(
    params: Path = PARAMS,
    name: str = typer.Option(None, help="campaign name (default: params.yaml's)"),
    source: Path = typer.Option(None, help="folder of the file archive (default: "
                                "paths.workdir/NAME/archive)"),
) -> None:
    """Copy a campaign's archive from the file layout of earlier versions (one JSON file per
    record) into its database (archive.url, or SQLite in the campaign's folder). Records
    already in the database are kept as they are, so running it again changes nothing."""
    from autolab.archive import Archive, ArchiveError
    from autolab.db.legacy import migrate_files

    p = _params(params, _overrides(None, name, None))
    root = p.paths.workdir.resolve() / p.campaign.name / "archive"
    source = source or root
    if not (source / "campaign.json").is_file():
        console.print(f"[red]no file archive in {source}[/red] (no campaign.json)",
                      highlight=False)
        raise typer.Exit(1)
    try:
        with Archive(root, url=p.archive.url, campaign=p.campaign.name) as archive:
            counts = migrate_files(source, archive)
    except ArchiveError as err:
        console.print(f"[red]{err}[/red]", highlight=False)
        raise typer.Exit(2) from None
    print(f"{source} -> {archive.location} (campaign {p.campaign.name!r})")
    for what, (read, added) in counts.items():
        print(f"  {what:<12} {read:>7} read, {added:>7} added, {read - added:>7} already there")


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
    from autolab.runner import give_trial_runner
    from autolab.sandbox import isolation_mode

    give_trial_runner(bench, isolation_mode(p.sandbox.isolation))  # as a campaign's would
    out = p.paths.prepared_dir / bench.name
    data_dir = p.paths.data_dir if p.paths.data_dir.exists() else None
    info = bench.prepare(data_dir, (out / "data").resolve())
    for path, text in bench.seed_files(p.campaign.seed_variant).items():
        atomic_write(out / "seeds" / p.campaign.seed_variant / path, text.encode())
    console.print(f"prepared {bench.name}: {info}")


if __name__ == "__main__":
    app()
