"""What `make up` prints: an aligned table, where the admin token is, and no crash report on a normal stop."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

from hub_devstack.services import SERVICE_PORTS, crashed, summary_lines

INFO = {
    "kafka": {"bootstrap_servers": "127.0.0.1:9092", "log": "var/local/kafka/logs/server.log"},
    "postgres": {"admin_dsn": "postgresql://postgres@127.0.0.1:5432/postgres", "log": "var/local/postgres.log"},
    "smtp": {"maildir": "var/local/mailbox", "host": "127.0.0.1", "port": 1025},
    "database": "synchub",
}


def test_every_row_of_the_table_starts_its_columns_at_the_same_place() -> None:
    services = {name: {"port": port, "log": f"var/local/logs/{name}.log"} for name, port in SERVICE_PORTS.items()}
    lines = summary_lines(INFO, services)
    assert len(lines) == 3 + len(SERVICE_PORTS)
    cells = [re.match(r"^  (\S.*?\S)\s{2,}(\S+)\s{2,}(\S.*)$", line) for line in lines]
    assert all(cells), lines
    # "notifications service" is the longest label: it must widen the column, not push its own row
    assert len({m.start(2) for m in cells if m}) == 1, lines
    assert len({m.start(3) for m in cells if m}) == 1, lines
    assert "notifications service" in {m.group(1) for m in cells if m}


def test_a_service_stopped_by_make_down_or_ctrl_c_did_not_crash() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        # the signal only once the child is running its code: a SIGINT that lands while the interpreter is still
        # starting can be lost (CI once waited the full 30 s for a child that never saw it); and a shell that runs the
        # suite in the background (`bash .ci/run &`) hands it SIGINT ignored, which Python then never turns into
        # KeyboardInterrupt: the child installs the default handler itself
        proc = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGINT, signal.default_int_handler); "
                                     "print('ready', flush=True); time.sleep(60)"],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        proc.send_signal(sig)
        proc.wait(timeout=30)
        # Python turns SIGINT into KeyboardInterrupt: exit code 1 would be a crash, -2 or -15 are not
        assert proc.returncode in (-signal.SIGTERM, -signal.SIGINT, 1)
        if proc.returncode != 1:
            assert not crashed(proc.returncode)
    assert not crashed(0)
    assert not crashed(None)  # still running


def test_a_service_that_fails_on_its_own_is_reported() -> None:
    proc = subprocess.run([sys.executable, "-c", "raise SystemExit(3)"], check=False)
    assert crashed(proc.returncode)
    killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    killed.kill()
    killed.wait(timeout=30)
    assert crashed(killed.returncode)
