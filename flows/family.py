"""A campaign over a family of problems: each member's own campaign, in rounds.

    for each round:
        for each member:
            (its first round to run) prewarm: the untimed preparation of this member and
                the next ones, family.prewarm_jobs of them side by side
            write what its related members found  ->  campaign(member)
    family summary: the aggregate of the champions against that of the seeds

Each member's campaign is the ordinary campaign flow (its own archive, lineage, champion,
MLflow runs and report); a round resumes it for `family.proposals_per_round` more
proposals, and the last round confirms its champion on the test split.
"""

from __future__ import annotations

from prefect import flow

from autolab.config import Params, load_params
from autolab.family import (
    chosen_members,
    judged,
    member_overrides,
    member_params,
    prewarm_members,
    related_members,
    results_of,
    write_related,
    write_reports,
)
from autolab.tracking import Tracker
from benchmarks import get_family
from benchmarks.protocol import BenchmarkFamily
from flows import FLOW_RESULTS
from tasks.prepare import SettingsRefused


def prewarm(params: Params, family: BenchmarkFamily, members: list[str]) -> None:
    """Untimed work first, side by side (family.prewarm_jobs); then, one member at a time,
    the timed preparations find it done. Also run before `autolab run`'s preflight, which
    prepares the members of a resumed campaign; a member prewarmed already skips it."""
    if params.family.prewarm_jobs and members:
        warmed = prewarm_members(params, family, members, params.family.prewarm_jobs)
        for m, what in warmed.items():
            print(f"{family.name}/{m}: prewarm: {what}", flush=True)


@flow(name="family-campaign", validate_parameters=False, persist_result=False,
      result_storage=FLOW_RESULTS)
def family_campaign(params_path: str = "params.yaml", overrides: dict | None = None,
                    confirm: bool = True) -> dict:
    from flows.campaign import campaign

    params = load_params(params_path, overrides)
    family = get_family(params.campaign.benchmark)
    members = chosen_members(family, params.family.members)
    related = related_members(family, members)
    rounds, per = params.family.rounds, params.family.proposals_per_round
    print(f"{family.name}: {len(members)} problems, {rounds} rounds of {per} proposals each",
          flush=True)
    errors: dict[str, str] = {}  # a member whose campaign cannot go on; the others do

    def done(r: int, m: str) -> bool:  # a resumed family campaign: this round of m is done
        return m in errors or (r < rounds - 1 and judged(params, family.name, m) >= (r + 1) * per)

    # Prewarmed a window at a time, just before its members' turns: a campaign stopped
    # part-way (a machine's time is up) has compiled nothing it did not reach, and one
    # resumed on a fresh machine compiles only what it is about to time.
    window = max(1, params.family.prewarm_jobs)
    warmed: set[str] = set()
    for r in range(rounds):
        for i, m in enumerate(members):
            if done(r, m):
                continue
            if m not in warmed:  # not prewarmed by this run yet
                ahead = [x for x in members[i:] if not done(r, x) and x not in warmed][:window]
                prewarm(params, family, ahead)
                warmed.update(ahead)
            found = [x for o in related[m] for x in results_of(params, family.name, o)]
            root = params.paths.workdir.resolve() / member_params(params, family.name,
                                                                  m).campaign.name
            write_related(root, found)
            try:
                campaign(params_path=params_path,
                         overrides=member_overrides(overrides, family.name,
                                                    params.campaign.name, m, (r + 1) * per),
                         confirm=confirm and r == rounds - 1)
            except SettingsRefused:
                raise  # e.g. changed fixed settings: the same for every member
            except Exception as err:  # noqa: BLE001 - recorded; the other members go on
                errors[m] = f"{type(err).__name__}: {err}"
                print(f"{family.name}/{m}: stopped: {errors[m][:300]}", flush=True)
    report, summary = write_reports(params, family, members, errors)
    if len(errors) == len(members):
        raise RuntimeError(f"{family.name}: every member's campaign stopped with an error; "
                           f"see {report}")
    try:
        Tracker(params.paths.mlruns.resolve(), enabled=params.tracking.mlflow).log_family(summary)
    except Exception as err:  # noqa: BLE001 - MLflow is a mirror; the archives are the truth
        print(f"warning: MLflow could not record the family: {err}")
    print(f"{family.name}: suite {summary.metric} {summary.before} -> {summary.after}; "
          f"report {report}", flush=True)
    return summary.model_dump(mode="json")
