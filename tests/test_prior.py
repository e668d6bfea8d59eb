"""A campaign learns from earlier campaigns on its benchmark (campaign.learn_from): what they
accepted is tried first, with the parameters that won; what they rejected is drawn less
often; a name that cannot serve refuses the campaign before anything runs."""

from __future__ import annotations

import pytest
from helpers import prefect_test_server, write_params
from test_proposers import _request, _view

from autolab.archive import campaign_archive
from autolab.config import ParamsError, load_params
from autolab.lab import open_lab
from autolab.proposers.base import RelatedResult
from autolab.proposers.offline import OfflineProposer
from autolab.records import Decision, Proposal
from tasks.prepare import CampaignRefused, learn_from_earlier


@pytest.fixture(scope="module")
def prefect_api(request):
    prefect_test_server(request)


def _won(member, params, at="2026-01-01T00:00:01"):
    return RelatedResult(member=member, steps=["clip_grad"], step_params=[params],
                         outcome="accepted", decided_at=at)


def _lost(member, step):
    return RelatedResult(member=member, steps=[step], outcome="rejected",
                         decided_at="2026-01-01T00:00:00")


def _first_improve(related, seed):
    request = _request("improve", [_view("p")], seed=seed).model_copy(
        update={"related": related})
    return OfflineProposer().propose(request)


def test_an_edit_accepted_earlier_comes_first_with_the_parameters_that_won():
    related = [_won("campaign old", {"value": 0.5}, "2026-01-01T00:00:01"),
               _won("campaign older", {"value": 1.0}, "2026-01-01T00:00:02")]
    for seed in range(20):
        draft = _first_improve(related, seed)
        # the most recent win's parameters first
        assert [(s.name, s.params) for s in draft.steps] == [("clip_grad", {"value": 1.0})]
        assert "campaign old" in draft.rationale and "campaign older" in draft.rationale
    # parameters the catalogue no longer offers are not used; the edit still comes first
    draft = _first_improve([_won("campaign old", {"value": 7.0})], 0)
    assert draft.steps[0].name == "clip_grad" and draft.steps[0].params["value"] in (0.5, 1.0)


def test_an_edit_that_lost_earlier_is_drawn_less_often():
    def share_of_cosine(related):
        firsts = [_first_improve(related, seed).steps[0].name for seed in range(600)]
        return firsts.count("cosine") / len(firsts)

    plain = share_of_cosine([])
    lost = share_of_cosine([_lost("campaign a", "cosine"), _lost("campaign b", "cosine")])
    assert 0.4 < plain < 0.6  # two applicable fresh edits, equal odds
    assert lost < plain - 0.1, (plain, lost)
    assert "worse or failed in 2" in next(
        d.rationale for d in (_first_improve([_lost("campaign a", "cosine"),
                                              _lost("campaign b", "cosine")], s)
                              for s in range(50)) if d.steps[0].name == "cosine")


def test_learn_from_names_must_be_campaigns_and_not_this_one(tmp_path):
    itself = load_params(write_params(tmp_path, campaign={"name": "a", "learn_from": ["a"]}))
    with pytest.raises(CampaignRefused, match="learn_from names this campaign itself"):
        learn_from_earlier(open_lab(itself, create=False))
    with pytest.raises(ParamsError, match="campaign.learn_from"):
        load_params(write_params(tmp_path, campaign={"learn_from": ["../x"]}))
    p = load_params(write_params(tmp_path, campaign={"learn_from": ["never-ran"]}))
    with pytest.raises(CampaignRefused, match="learn_from: no campaign 'never-ran'"):
        learn_from_earlier(open_lab(p, create=False))


@pytest.mark.slow
def test_a_campaign_tries_first_what_an_earlier_one_accepted(tmp_path, prefect_api):
    from flows.campaign import campaign

    common = dict(proposer={"kind": "offline", "operators": {"improve": 1.0}},
                  sandbox={"isolation": "none", "allow_unisolated": True},
                  tracking={"mlflow": False}, evaluation={"min_seeds": 2, "max_seeds": 3,
                                                          "test_seeds": 2})
    first = write_params(tmp_path, max_proposals=3, campaign={"name": "first"}, **common)
    campaign(params_path=str(first), confirm=False)
    earlier = campaign_archive(load_params(first), create=False)
    won = {}
    for d in sorted(earlier.all(Decision), key=lambda d: d.created_at):
        if d.outcome == "accepted":
            for s in earlier.get(Proposal, d.proposal_id).steps:
                won[s.name] = s.params  # the latest win's parameters
    earlier.close()
    assert won, "the noop seed has edits that win"

    # another benchmark's campaign cannot serve as the prior
    other = load_params(write_params(tmp_path, benchmark="noop-sleep", campaign={
        "name": "second", "learn_from": ["first"]}, **common))
    with pytest.raises(CampaignRefused, match="ran benchmark 'noop', not 'noop-sleep'"):
        learn_from_earlier(open_lab(other, create=False))

    second = write_params(tmp_path, max_proposals=1, campaign={
        "name": "second", "learn_from": ["first"], "random_seed": 7}, **common)
    campaign(params_path=str(second), confirm=False)
    archive = campaign_archive(load_params(second), create=False)
    (proposal,) = archive.all(Proposal)
    archive.close()
    (step,) = proposal.steps
    assert step.name in won and step.params == won[step.name]
    assert "campaign first" in proposal.rationale


def test_a_language_model_proposer_is_shown_what_earlier_campaigns_judged():
    from autolab.proposers.memory import build_context

    related = [_lost("campaign a", "cosine"),
               _won("campaign b", {"value": 1.0}, "2026-01-01T00:00:02")]
    request = _request("improve", [_view("p")]).model_copy(update={"related": related})
    text = build_context(request, "improve it", 12_000).text
    section = text[text.index("## Judged in related problems or earlier campaigns"):]
    lines = [ln for ln in section.splitlines() if ln.startswith("- ")][:2]
    assert lines == ["- campaign b: clip_grad(value=1.0) -> accepted",
                     "- campaign a: cosine -> rejected"]


def test_an_edit_that_lost_more_often_than_it_won_is_not_put_first():
    related = [_won("campaign a", {"value": 1.0}), _lost("campaign b", "clip_grad"),
               _lost("campaign c", "clip_grad")]
    firsts = {_first_improve(related, seed).steps[0].name for seed in range(40)}
    assert firsts == {"clip_grad", "cosine"}  # a weighted draw, no longer clip_grad always


@pytest.mark.slow
def test_a_refused_prior_registers_no_campaign(tmp_path, prefect_api):
    from flows.campaign import campaign

    path = write_params(tmp_path, campaign={"learn_from": ["never-ran"]},
                        sandbox={"isolation": "none", "allow_unisolated": True},
                        tracking={"mlflow": False})
    with pytest.raises(CampaignRefused, match="never-ran"):
        campaign(params_path=str(path), confirm=False)
    archive = campaign_archive(load_params(path), create=False)
    assert archive.campaign() is None
    archive.close()
