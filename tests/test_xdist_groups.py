"""The suite's shared fixtures rely on pytest-xdist's groups (tests/conftest.py): a group's
tests run on one worker, so a session fixture such as the reliability harness's clean run is
built once. Under pytest 9.2 with pytest-xdist 3.8 the grouping silently stopped (each worker
built them again, minutes of CPU); this fails if that happens again."""

from __future__ import annotations

import os

import pytest


def test_a_grouped_test_runs_in_its_group(request: pytest.FixtureRequest) -> None:
    if "PYTEST_XDIST_WORKER" not in os.environ or request.config.getvalue("dist") != "no":
        pytest.skip("only meaningful on a pytest-xdist worker with --dist=loadgroup")
    assert request.config.getvalue("loadgroup")
    assert request.node.nodeid.endswith("@xdist_groups"), request.node.nodeid
