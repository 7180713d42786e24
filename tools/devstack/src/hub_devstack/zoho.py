"""`make up ZOHO=fake`: the fake Zoho (`hub-fakezoho`, seeded, its tables in <state>/fakezoho.sqlite3) and both connectors wired to it, started
instead of the sandbox (the connectors stand where it stands).

The fake gets an OAuth client made up for this state folder; the connectors get it as org `org-1`'s
credentials (`HUB_ZOHO_ORGS`), each with its own database role and Kafka principal. Each connector's
settings are also written to `<state>/secrets/<connector>.env`, the files `hub-connector backfill
--crm-env ... --pm-env ...` takes (the demo runs it so).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from . import _proc
from .kafka import new_password
from .provision import provision_service

ORG = "org-1"
PORTAL = "700001"  # hub_fakezoho.app.DEMO_PORTAL
FAKE_PORT = 8095
CONNECTOR_PORTS = {"crm-connector": 8091, "pm-connector": 8092}


def fake_url() -> str:
    return f"http://127.0.0.1:{FAKE_PORT}"


def oauth_client(state_dir: Path) -> dict[str, str]:
    """The fake's OAuth client of this state folder (made once, kept in <state>/secrets/fakezoho.json)."""
    path = state_dir / "secrets" / "fakezoho.json"
    known = _proc.read_json(path)
    if known:
        return dict(known)
    client = {"client_id": f"1000.{new_password()[:16].upper()}", "client_secret": new_password(),
              "refresh_token": f"1000.{new_password()}", "notify_token": new_password()[:40],
              "webhook_secret": new_password()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(client))
    path.chmod(0o600)
    return client


def orgs_json(client: dict[str, str]) -> str:
    url = fake_url()
    return json.dumps({ORG: {**{k: client[k] for k in ("client_id", "client_secret", "refresh_token", "notify_token", "webhook_secret")},
                             "accounts_url": url, "api_url": url, "projects_url": url, "portal_ids": [PORTAL]}})


async def provision(admin_dsn: str, database: str) -> dict[str, str]:
    """A role and schema per connector (`crm_connector`, `pm_connector`)."""
    return {name: await provision_service(admin_dsn, database, name.replace("-", "_"), name.replace("-", "_"))
            for name in CONNECTOR_PORTS}


def services(state_dir: Path, dsns: dict[str, str], kafka_bootstrap: str) -> dict[str, dict[str, Any]]:
    """stack.json's `services` entries of the connectors (as `start_infra` writes the others')."""
    client = oauth_client(state_dir)
    out = {}
    for name, dsn in dsns.items():
        env = {"HUB_SERVICE_NAME": name, "HUB_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap, "HUB_DB__URL": dsn,
               "HUB_ZOHO_ORGS": orgs_json(client), "HUB_CRM_CONNECTOR_PUBLIC_URL": f"http://127.0.0.1:{CONNECTOR_PORTS['crm-connector']}",
               "HUB_CRM_CONNECTOR_POLL_SECONDS": "30", "HUB_PM_CONNECTOR_POLL_SECONDS": "10"}
        out[name] = {"dsn": dsn, "schema": name.replace("-", "_"), "env": env}
    return out


def write_env_files(state_dir: Path, info: dict[str, Any], kafka_env: dict[str, dict[str, str]]) -> dict[str, Path]:
    """<state>/secrets/<connector>.env: each connector's settings, for `hub-connector backfill --crm-env/--pm-env`."""
    out = {}
    for name in CONNECTOR_PORTS:
        path = state_dir / "secrets" / f"{name}.env"
        values = {**info["services"][name]["env"], **kafka_env[name]}
        path.write_text("".join(f"{k}='{v}'\n" for k, v in values.items()))
        path.chmod(0o600)
        out[name] = path
    return out


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/fake/config", timeout=2) as resp:
            return bool(resp.status == 200)
    except Exception:  # noqa: BLE001 - not up (yet)
        return False


def start_fake(state_dir: Path, timeout: float = 30.0) -> dict[str, Any]:
    """Start (or reuse) `hub-fakezoho`, seeded with the demo org; record it in stack.json."""
    from .stack import record_process

    log_path = state_dir / "logs" / "fakezoho.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if _answers(fake_url()):
        return {"port": FAKE_PORT, "log": str(log_path), "reused": True}
    client = oauth_client(state_dir)
    env = {**os.environ, "HUB_FAKEZOHO_PORT": str(FAKE_PORT), "HUB_FAKEZOHO_SEED": "demo",
           "HUB_FAKEZOHO_DB": str(state_dir / "fakezoho.sqlite3"),
           "HUB_FAKEZOHO_CLIENT_ID": client["client_id"], "HUB_FAKEZOHO_CLIENT_SECRET": client["client_secret"],
           "HUB_FAKEZOHO_REFRESH_TOKEN": client["refresh_token"]}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "hub-fakezoho")], env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    record_process(state_dir, "fakezoho", proc.pid, log=log_path, stop_signal="SIGTERM", stop_timeout=10, port=FAKE_PORT)
    deadline = time.monotonic() + timeout
    while not _answers(fake_url()):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the fake Zoho did not start:\n{_proc.tail(log_path)}")
        time.sleep(0.2)
    return {"pid": proc.pid, "port": FAKE_PORT, "log": str(log_path), "proc": proc}
