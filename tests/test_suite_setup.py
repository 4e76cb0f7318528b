"""The suite's own machinery. Under ``make test`` (pytest-xdist, ``--dist loadgroup``) the tests
that share a costly module fixture carry an ``xdist_group`` so that one worker builds it once.
pytest 9.2 with xdist 3.8 dropped the group silently (pytest-xdist#1386): the DDP launch then ran
on both workers. This test fails when the group no longer reaches the scheduler."""

import pytest


@pytest.mark.xdist_group("suite_setup")
def test_an_xdist_group_reaches_the_scheduler(request: pytest.FixtureRequest) -> None:
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("only under pytest-xdist with --dist loadgroup (make test)")
    assert request.node.nodeid.endswith("@suite_setup"), request.node.nodeid
