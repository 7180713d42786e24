"""`python -m bench.statements`: statements per batch through the platform's BatchProcessor.

Echo is the reference set-based service: its batch sends the same statements whatever the batch's size (one
insert of its ping rows), so the count per batch of 10 and of 40 must be equal, and the service's own part one.
"""

from __future__ import annotations

import pytest

from bench import harness as h
from bench.statements import echo_paths, render

pytestmark = pytest.mark.integration


async def test_echo_sends_a_fixed_number_of_statements_per_batch_whatever_its_size(pg_admin_dsn: str) -> None:
    dbs = h.Databases(h.Infra("", pg_admin_dsn, "test"))
    try:
        _, small = await dbs.create(["echo"], "stmt_small")
        _, large = await dbs.create(["echo"], "stmt_large")
        (of_10,) = (await echo_paths(small["echo"], 20, 10)).values()
        (of_40,) = (await echo_paths(large["echo"], 80, 40)).values()
    finally:
        await dbs.drop_all()
    assert of_10.optimistic and of_40.optimistic, "no handler raised: no savepoints"
    assert of_10.per_batch == of_40.per_batch, (of_10.texts, of_40.texts)
    assert of_10.own_per_batch == of_40.own_per_batch == 1, of_40.texts
    assert "| echo | 40    | 5" in render({"echo": of_40})
