"""Published contracts (contracts/) must match the code: run `make contracts` after changing an event."""

from __future__ import annotations

from pathlib import Path

from hub_platform.contracts import differences

CONTRACTS = Path(__file__).resolve().parents[1] / "contracts"


def test_committed_contracts_match_the_code() -> None:
    problems = differences(CONTRACTS)
    assert not problems, "contracts/ is out of date, run `make contracts`: " + "; ".join(problems[:10])


def test_every_service_publishes_an_asyncapi_document() -> None:
    names = {p.stem for p in (CONTRACTS / "asyncapi").glob("*.json")}
    assert {"identity", "linking", "tasks", "notifications"} <= names
