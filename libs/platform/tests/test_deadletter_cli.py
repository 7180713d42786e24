"""The dead-letter CLI lists what a service rejected and replays a chosen message (real broker + DB)."""

from __future__ import annotations

import pytest

from hub_devstack.pytest_plugin import HubEnv, KafkaProbe, envelopes, patched_env, running
from hub_platform import deadletter_cli, echo
from hub_platform.settings import ServiceSettings
from hub_schema import encode, make_event, topics
from hub_schema.events.diagnostics import DiagPing

pytestmark = pytest.mark.integration


async def test_list_and_replay_a_dead_letter(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    from hub_devstack.provision import provision_service

    hub_env.dsns["echo"] = await provision_service(hub_env.admin_dsn, hub_env.database, "echo", "echo")
    good = make_event(DiagPing(seq=9), org_id="org-1", entity_key="diag:9", producer="test", origin="crm")
    # The same event in a wrong schema version: dead-lettered with the reason.
    wrong_version = encode(good).replace(b'"version":1', b'"version":7')
    with patched_env({**hub_env.env("echo"), **hub_env.kafka_env("deadletters")}):  # the CLI's own principal
        settings = ServiceSettings()
    async with running(echo.build(hub_env.settings(echo.EchoSettings, "echo"))):
        out = await kafka_probe.reader(topics.TASKS_EVENTS)
        dlq = await kafka_probe.reader(topics.DEAD_LETTERS)
        await kafka_probe.send_raw(topics.CRM_INGEST, wrong_version, key="diag:9")
        await kafka_probe.collect(dlq, lambda rs: len(rs) >= 1)

        letters = await deadletter_cli.read_all(settings)
        assert [(d.summary()["consumer"], d.summary()["code"]) for d in letters] == [("echo", "unsupported_version")]
        assert "no schema version 7" in letters[0].summary()["reason"]

        # An operator fixes the producer's bug upstream... here we replay the original bytes
        # and see that the service dead-letters it again (not silently dropped), then replay a good one.
        done = await deadletter_cli.replay(settings, [letters[0].ref])
        assert done and done[0].endswith(hub_env.topic(topics.CRM_INGEST))
        again = await kafka_probe.collect(dlq, lambda rs: len(rs) >= 1)
        assert dict(again[0].headers)["x-dlq-code"] == b"unsupported_version"
        assert dict(again[0].headers)["x-original-x-replayed-from"].startswith(b"hub.deadletters:")
        await kafka_probe.send(good)
        pongs = await kafka_probe.collect(out, lambda rs: len(rs) >= 1)
    assert envelopes(pongs)[0].payload.seq == 9
