"""Prefect flows: the campaign, one research iteration, the red-team run.

A flow that fails keeps Prefect's record of the exception in the project's `.prefect/`
folder (which `make clean` clears), never in the user's home; trial results and their cache
keys live in each campaign's own folder (see tasks/run.py)."""

from __future__ import annotations

from autolab.integrity import PROJECT

FLOW_RESULTS = PROJECT / ".prefect" / "results"
