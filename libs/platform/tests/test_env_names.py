"""A HUB_* variable that nothing reads is reported with the name it was probably meant to be."""

from __future__ import annotations

from hub_platform.env_names import env_names, other_services_names, unread_variables
from hub_platform.settings import ServiceSettings


def test_names_are_derived_from_the_settings_fields_with_the_nested_delimiter() -> None:
    names = env_names(ServiceSettings)
    assert {"HUB_SERVICE_NAME", "HUB_KAFKA__BOOTSTRAP_SERVERS", "HUB_KAFKA__FETCH_MAX_WAIT_MS", "HUB_DB__URL"} <= names
    assert "HUB_KAFKA_BOOTSTRAP_SERVERS" not in names


def test_a_typo_is_reported_with_the_name_it_was_meant_to_be() -> None:
    environ = {
        "HUB_KAFKA_BOOTSTRAP_SERVERS": "kafka:9092",  # one underscore: ignored by pydantic-settings
        "HUB_KAFKA__BOOTSTRAP_SERVERS": "kafka:9092",
        "HUB_SOMETHING_ELSE": "1",
        "PATH": "/usr/bin",
    }
    assert unread_variables(ServiceSettings, environ) == [
        ("HUB_KAFKA_BOOTSTRAP_SERVERS", "HUB_KAFKA__BOOTSTRAP_SERVERS"),
        ("HUB_SOMETHING_ELSE", None),
    ]


def test_tool_variables_and_other_services_settings_are_not_reported() -> None:
    environ = {"HUB_LOCAL_KAFKA_PORT": "9092", "HUB_TEST_PG_ADMIN_DSN": "x", "HUB_BENCH_EVENTS": "10",
               "HUB_FAILPOINT": "relay.after_publish", "HUB_SMTP__HOST": "mail"}
    assert unread_variables(ServiceSettings, environ, also_known={"HUB_SMTP__HOST"}) == []
    # the installed services' settings are found through their entry points (notifications reads SMTP)
    assert "HUB_SMTP__HOST" in other_services_names()
    assert "HUB_LINKING_ADMIN_TOKEN" in other_services_names()


def test_a_service_warns_about_a_misspelt_variable_when_it_starts(monkeypatch, capsys) -> None:
    from hub_platform import echo
    from hub_platform.logs import configure_logging

    monkeypatch.setenv("HUB_KAFKA__BATCH_MAX_RECORD", "100")  # the field is BATCH_MAX_RECORDS
    configure_logging("echo", "info", "json")
    service = echo.build()
    assert service.settings.kafka.batch_max_records == 500  # the typo left the default in force ...
    assert ("HUB_KAFKA__BATCH_MAX_RECORD", "HUB_KAFKA__BATCH_MAX_RECORDS") in service.warn_unread_variables()
    out = capsys.readouterr().out  # ... and the log says so
    assert '"variable": "HUB_KAFKA__BATCH_MAX_RECORD"' in out and '"did_you_mean": "HUB_KAFKA__BATCH_MAX_RECORDS"' in out
