"""`make up ZOHO=fake`: the connectors' settings the stack writes (one OAuth client per state folder, each
connector with its own database role), readable by the connectors and by `hub-connector backfill`."""

from __future__ import annotations

import stat
from pathlib import Path

from hub_crm_connector.cli import side_environment
from hub_crm_connector.settings import CrmConnectorSettings
from hub_devstack import zoho
from hub_devstack.services import summary_lines
from hub_pm_connector.settings import PmConnectorSettings
from hub_zoho.orgs import load_orgs


def test_connector_settings_files_point_each_connector_at_the_fake_with_its_own_role(tmp_path: Path) -> None:
    dsns = {"crm-connector": "postgresql://crm_connector:crm_connector@127.0.0.1:5432/synchub",
            "pm-connector": "postgresql://pm_connector:pm_connector@127.0.0.1:5432/synchub"}
    info = {"services": zoho.services(tmp_path, dsns, "127.0.0.1:9092")}
    client = zoho.oauth_client(tmp_path)
    assert zoho.oauth_client(tmp_path) == client, "one OAuth client per state folder, kept across restarts"
    assert stat.S_IMODE((tmp_path / "secrets" / "fakezoho.json").stat().st_mode) == 0o600
    files = zoho.write_env_files(tmp_path, info, {name: {"HUB_KAFKA__SASL_USERNAME": name} for name in dsns})
    for name, settings_cls in (("crm-connector", CrmConnectorSettings), ("pm-connector", PmConnectorSettings)):
        assert stat.S_IMODE(files[name].stat().st_mode) == 0o600
        with side_environment(str(files[name])):
            s = settings_cls()
        assert (s.service_name, s.schema, s.db.url.get_secret_value(), s.kafka.sasl_username) == \
            (name, name.replace("-", "_"), dsns[name], name)
        org = load_orgs(s.zoho_orgs_file, s.zoho_orgs.get_secret_value())[zoho.ORG]
        assert (org.crm_base, org.projects_base, org.portal_ids) == (zoho.fake_url(), zoho.fake_url(), [zoho.PORTAL])
        assert org.client_secret.get_secret_value() == client["client_secret"]
        assert client["client_secret"] not in repr(s), "secrets never print"


def test_the_fake_zoho_row_of_the_up_table_says_where_its_ui_is() -> None:
    info = {"kafka": {"bootstrap_servers": "127.0.0.1:9092", "log": "k.log"},
            "postgres": {"admin_dsn": "postgresql://postgres@127.0.0.1:5432/postgres", "log": "pg.log"},
            "smtp": {"maildir": "mailbox", "host": "127.0.0.1", "port": 1025}, "database": "synchub"}
    lines = summary_lines(info, {"fake Zoho": {"port": zoho.FAKE_PORT, "log": "fakezoho.log"},
                                 "crm-connector": {"port": 8091, "log": "crm.log"}})
    assert any(line.strip().startswith("fake Zoho") and "/fake/config" in line for line in lines)
    assert any(line.strip().startswith("crm-connector service") and "/readyz" in line for line in lines)
