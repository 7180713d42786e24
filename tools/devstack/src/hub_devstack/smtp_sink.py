"""A local SMTP server that accepts every mail and files it as ``<maildir>/<timestamp>-<n>.eml``.

Each file holds the raw message as received, preceded by ``X-Hub-Envelope-From`` and
``X-Hub-Envelope-To`` headers (the SMTP envelope), so it opens in any mail program.

In-process (tests)::

    sink = SmtpSink(tmp_path / "mail", port=free_port())
    sink.start()
    ...
    sink.messages()        # parsed EmailMessage objects, oldest first
    sink.refuse = True     # answer 451 to every MAIL FROM (mail server outage)
    sink.stop()

As a process (``make up``)::

    python -m hub_devstack.smtp_sink --maildir var/local/mailbox --port 1025 [--refuse]
"""

from __future__ import annotations

import argparse
import email
import email.policy
import itertools
import os
import signal
import threading
import time
from datetime import datetime, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

_HOST = "127.0.0.1"
REFUSE_REPLY = "451 4.3.0 Mail sink is refusing mail (simulated outage)"


class MaildirHandler:
    """aiosmtpd handler: writes each message to the maildir (atomically: temp file + rename)."""

    def __init__(self, maildir: Path, refuse: bool = False) -> None:
        self.maildir = maildir
        self.refuse = refuse
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]) -> str:
        if self.refuse:
            return REFUSE_REPLY
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse:
            return REFUSE_REPLY
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8")
        path = self.store(envelope.mail_from or "", list(envelope.rcpt_tos), content)
        return f"250 2.0.0 Stored as {path.name}"

    def store(self, mail_from: str, rcpt_tos: list[str], raw: bytes) -> Path:
        header = f"X-Hub-Envelope-From: <{mail_from}>\r\nX-Hub-Envelope-To: {', '.join(f'<{r}>' for r in rcpt_tos)}\r\n"
        self.maildir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            n = next(self._counter)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        path = self.maildir / f"{stamp}-{os.getpid()}-{n:06d}.eml"
        tmp = self.maildir / f".{path.name}.tmp"
        tmp.write_bytes(header.encode("utf-8") + raw)
        os.replace(tmp, path)
        return path


class SmtpSink:
    """SMTP sink on 127.0.0.1:<port> (aiosmtpd, runs in its own thread)."""

    def __init__(self, maildir: Path | str, port: int = 1025, *, refuse: bool = False) -> None:
        self.maildir = Path(maildir).resolve()
        self.port = int(port)
        self.host = _HOST
        self.handler = MaildirHandler(self.maildir, refuse=refuse)
        self._controller: Controller | None = None

    @property
    def refuse(self) -> bool:
        return self.handler.refuse

    @refuse.setter
    def refuse(self, value: bool) -> None:
        self.handler.refuse = value

    def start(self) -> SmtpSink:
        """Start listening; returns self. Ready when it returns (aiosmtpd connects to itself)."""
        self.maildir.mkdir(parents=True, exist_ok=True)
        controller = Controller(
            self.handler,
            hostname=self.host,
            port=self.port,
            ready_timeout=10.0,
            enable_SMTPUTF8=True,
            data_size_limit=25 * 1024 * 1024,
        )
        controller.start()
        self._controller = controller
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def files(self) -> list[Path]:
        """The .eml files received so far, oldest first."""
        return list_mail(self.maildir)

    def messages(self) -> list[EmailMessage]:
        """The received messages, parsed, oldest first."""
        return [read_mail(p) for p in self.files()]

    def wait_for(self, count: int = 1, timeout: float = 10.0) -> list[EmailMessage]:
        """Wait until at least `count` messages are in the maildir; returns them all."""
        deadline = time.monotonic() + timeout
        while True:
            files = self.files()
            if len(files) >= count:
                return [read_mail(p) for p in files]
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{len(files)} of {count} mails arrived within {timeout}s")
            time.sleep(0.05)


def list_mail(maildir: Path | str) -> list[Path]:
    """.eml files of a maildir written by the sink, oldest first."""
    d = Path(maildir)
    return sorted(d.glob("*.eml")) if d.is_dir() else []


def read_mail(path: Path | str) -> EmailMessage:
    msg = email.message_from_bytes(Path(path).read_bytes(), policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hub_devstack.smtp_sink", description=__doc__.splitlines()[0])
    parser.add_argument("--maildir", required=True, type=Path, help="folder for the .eml files")
    parser.add_argument("--port", type=int, default=int(os.environ.get("HUB_LOCAL_SMTP_PORT", "1025")))
    parser.add_argument("--refuse", action="store_true", help="answer 451 to every mail (outage simulation)")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sink = SmtpSink(args.maildir, port=args.port, refuse=args.refuse).start()
    print(f"smtp sink listening on {sink.host}:{sink.port}, mail goes to {sink.maildir}", flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        sink.stop()
        print("smtp sink stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
