"""The background sender: claims pending mails from the delivery log and sends them over SMTP.

Why it is a separate loop and not part of the handler: the handler runs inside
the consumer's transaction; SMTP must neither run inside it nor block the
consumer while the server is down. Here every step is its own short transaction:

    claim (pending → sending, lease)  |  SMTP send (no transaction open)  |  mark sent/failed + outcome event (outbox)

Retries: each claim tries up to `quick_retries` times in a row (tenacity,
exponential backoff with jitter); if the server still refuses (4xx) the mail
goes back to pending, due after `retry_delay(attempts)` (exponential, jittered,
capped), until `max_attempts` refusals → `failed` + `notification.failed`.
A 5xx is permanent → `failed` at once. If the server cannot be reached (or
login fails: a configuration problem, not the mail's), the mail stays pending
without using up its attempts, every worker pauses (growing pause, capped) and
the mail goes out when the server returns: nothing is lost during an outage.
A failed mail is kept and can be queued again: `POST /api/v1/deliveries/{id}/retry`.

One e-mail per request, and the one window where two can go out: the sender
dies (or loses its database) after the SMTP server accepted the mail and before
the row is marked `sent`. The row's lease then expires, another claim sends it
again — with the same Message-ID, so clients that thread/de-duplicate by
Message-ID show one mail — and `resent_after_crash` (column, and the metric
hub_notifications_resent_after_crash_total) counts it. A connection dropped
right after the final "." of DATA is the same ambiguity and is resolved the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
from datetime import datetime, timezone
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

import aiosmtplib
import asyncpg
from prometheus_client import Counter
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from hub_platform import failpoints, metrics
from hub_platform.logs import get_logger
from hub_platform.outbox import write_outbox
from hub_platform.telemetry import current_trace_headers
from hub_platform.waiting import wait_event
from hub_schema import Payload, encode, make_event
from hub_schema.events.notifications import NotificationFailed, NotificationSent

from hub_notifications import domain, storage
from hub_notifications.handlers import outcome_event_id
from hub_notifications.settings import NotificationsSettings

if TYPE_CHECKING:
    from hub_platform.service import HubService

log = get_logger(__name__)

SENT = Counter("hub_notifications_sent_total", "Mails accepted by the SMTP server", ["kind"], registry=metrics.REGISTRY)
FAILED = Counter("hub_notifications_failed_total", "Mails given up", ["kind"], registry=metrics.REGISTRY)
DEFERRED = Counter("hub_notifications_deferred_total", "Mails put back to pending", ["cause"], registry=metrics.REGISTRY)
RESENT = Counter("hub_notifications_resent_after_crash_total",
                 "Mails claimed again after a sender died mid-send (may be a second copy)", registry=metrics.REGISTRY)


class SmtpFailure(Exception):
    def __init__(self, cls: domain.SmtpErrorClass, message: str, code: int | None) -> None:
        super().__init__(message)
        self.cls = cls
        self.code = code


def classify(exc: BaseException) -> SmtpFailure:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        worst = max(codes) if codes else 550
        detail = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
        return SmtpFailure(domain.classify_smtp_error(worst, reached_server=True), detail, worst)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        during_auth = isinstance(exc, (aiosmtplib.SMTPAuthenticationError, aiosmtplib.SMTPConnectResponseError,
                                       aiosmtplib.SMTPHeloError))
        return SmtpFailure(domain.classify_smtp_error(exc.code, reached_server=True, during_auth=during_auth),
                           f"{exc.code} {exc.message}", exc.code)
    return SmtpFailure("outage", f"{type(exc).__name__}: {exc}", None)


def _loggable(failure: SmtpFailure) -> dict[str, object]:
    """What a log line says of an SMTP failure: its class and reply code, not the reply text (it quotes addresses)."""
    return {"smtp_code": failure.code, "failure_class": failure.cls}


def build_message(row: Any, from_address: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = from_address
    msg["To"] = Address(display_name=domain.clean_display_name(row["recipient_name"]), addr_spec=row["recipient_email"])
    msg["Subject"] = row["subject"]
    msg["Date"] = format_datetime(row["created_at"])
    msg["Message-ID"] = row["message_id"]
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Hub-Request-Id"] = str(row["request_id"])
    msg["X-Hub-Kind"] = row["kind"]
    msg.set_content(row["body_text"], charset="utf-8")
    msg.add_alternative(row["body_html"], subtype="html", charset="utf-8")
    if row["attachment"] is not None:
        maintype, subtype = domain.XLSX_MIME
        msg.add_attachment(bytes(row["attachment"]), maintype=maintype, subtype=subtype, filename=row["attachment_name"])
    msg["Content-Language"] = row["locale"]  # after the body: set_content() drops Content-* headers
    return msg


class Sender:
    def __init__(self, service: HubService) -> None:
        self.service = service
        settings = service.settings
        assert isinstance(settings, NotificationsSettings)
        self.smtp = settings.smtp
        self.policy = settings.delivery
        self._wake = asyncio.Event()
        self._paused_until = 0.0
        self._outage_streak = 0
        self._listener: asyncpg.Connection | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        assert self.service.pool is not None
        return self.service.pool

    def wake(self, *_: object) -> None:
        self._wake.set()

    async def run(self) -> None:
        with contextlib.suppress(Exception):
            self._listener = await self.pool.acquire()
            await self._listener.add_listener(storage.NOTIFY_CHANNEL, self.wake)
        try:
            await asyncio.gather(*(self._worker(i) for i in range(self.policy.workers)))
        finally:
            if self._listener is not None:
                with contextlib.suppress(Exception):
                    await self._listener.remove_listener(storage.NOTIFY_CHANNEL, self.wake)
                    await self.pool.release(self._listener)

    async def _worker(self, n: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            pause = self._paused_until - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)
            try:
                worked = await self._once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database down: keep going, rows are safe in the table
                log.warning("sender iteration failed", error=repr(exc), worker=n)
                worked = False
                await asyncio.sleep(1.0)
            if not worked:
                self._wake.clear()
                await wait_event(self._wake, self.policy.poll_seconds)

    async def _once(self) -> bool:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await storage.claim_one(conn, self.policy.lease_seconds)
        if row is None:
            return False
        if row["prev_state"] == "sending":
            RESENT.inc()
            log.warning("re-sending a mail whose sender died mid-send", request_id=str(row["request_id"]),
                        message_id=row["message_id"])
        await self._deliver(row)
        return True

    async def _send(self, msg: EmailMessage) -> None:
        tls_context = None
        if self.smtp.use_tls or self.smtp.starttls:
            tls_context = ssl.create_default_context(cafile=self.smtp.cafile)
            if not self.smtp.validate_certs:
                tls_context.check_hostname = False
                tls_context.verify_mode = ssl.CERT_NONE
        await aiosmtplib.send(
            msg, hostname=self.smtp.host, port=self.smtp.port, username=self.smtp.username,
            password=self.smtp.password.get_secret_value() if self.smtp.password else None,
            use_tls=self.smtp.use_tls, start_tls=self.smtp.starttls, timeout=self.smtp.timeout,
            validate_certs=self.smtp.validate_certs, tls_context=tls_context,
        )

    async def _deliver(self, row: Any) -> None:
        attempts = row["attempts"]
        try:
            msg = build_message(row, self.smtp.from_address)
        except Exception as exc:  # a mail we cannot even build never will be
            await self._fail(row, attempts + 1, f"cannot build the message: {type(exc).__name__}: {exc}")
            return
        refusals = 0

        def retryable(exc: BaseException) -> bool:
            return classify(exc).cls != "permanent"

        async def send_once() -> None:
            nonlocal refusals
            try:
                await self._send(msg)
            except Exception as exc:
                if classify(exc).cls == "transient":
                    refusals += 1
                raise

        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(retryable),
                stop=stop_after_attempt(max(1, min(self.policy.quick_retries, self.policy.max_attempts - attempts))),
                wait=wait_exponential_jitter(multiplier=self.policy.quick_retry_initial, max=self.policy.quick_retry_max),
                reraise=True,
            ):
                with attempt:
                    await send_once()
        except asyncio.CancelledError:
            raise  # the row stays `sending`; its lease expires and it is claimed again
        except Exception as exc:
            failure = classify(exc)
            await self._after_failure(row, failure, attempts + max(refusals, 1 if failure.cls == "permanent" else 0))
            return
        failpoints.hit("notifications.after_smtp_accept")
        self._outage_streak = 0
        await self._succeed(row, attempts + refusals + 1)

    async def _after_failure(self, row: Any, failure: SmtpFailure, attempts: int) -> None:
        request_id = row["request_id"]
        if failure.cls == "outage":
            self._outage_streak += 1
            delay = domain.retry_delay(self._outage_streak, self.policy.outage_base_seconds,
                                       self.policy.outage_max_seconds, random.random())
            self._paused_until = asyncio.get_running_loop().time() + delay
            DEFERRED.labels("outage").inc()
            log.warning("SMTP server unavailable, mail kept pending", request_id=str(request_id), **_loggable(failure),
                        retry_in=round(delay, 2))
            async with self.pool.acquire() as conn:
                await storage.reschedule(conn, request_id, attempts=attempts, delay=delay,
                                         error=str(failure), outage=True)
            return
        if failure.cls == "permanent" or domain.gives_up(attempts, self.policy.max_attempts):
            await self._fail(row, max(attempts, 1), str(failure))
            return
        delay = domain.retry_delay(attempts, self.policy.retry_base_seconds, self.policy.retry_max_seconds, random.random())
        DEFERRED.labels("refused").inc()
        log.info("SMTP server refused for now, will retry", request_id=str(request_id), **_loggable(failure),
                 attempts=attempts, retry_in=round(delay, 2))
        async with self.pool.acquire() as conn:
            await storage.reschedule(conn, request_id, attempts=attempts, delay=delay, error=str(failure), outage=False)

    async def _succeed(self, row: Any, attempts: int) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            done = await storage.mark_sent(conn, row["request_id"], attempts)
            await self._emit(conn, row, NotificationSent(
                request_id=row["request_id"], kind=row["kind"], recipient_email=row["recipient_email"],
                message_id=row["message_id"], attempts=attempts, sent_at=done["sent_at"],
            ), "sent")
        SENT.labels(row["kind"]).inc()
        log.info("mail sent", request_id=str(row["request_id"]), kind=row["kind"], attempts=attempts)
        self.service.relay.wake()

    async def _fail(self, row: Any, attempts: int, error: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await storage.mark_failed(conn, row["request_id"], attempts, error)
            await self._emit(conn, row, NotificationFailed(
                request_id=row["request_id"], kind=row["kind"], recipient_email=row["recipient_email"],
                attempts=attempts, error=error[:2000] or "unknown error",
            ), "failed")
        FAILED.labels(row["kind"]).inc()
        # the error stays in the delivery log and the outcome event; SMTP replies quote the recipient, so not in logs
        log.warning("mail failed", request_id=str(row["request_id"]), kind=row["kind"], attempts=attempts)
        self.service.relay.wake()

    async def _emit(self, conn: asyncpg.Connection, row: Any, payload: Payload, outcome: str) -> None:
        envelope = make_event(
            payload, org_id=row["org_id"], entity_key=row["entity_key"], producer=self.service.name,
            origin=row["origin"], correlation_id=row["correlation_id"], causation_id=row["request_event_id"],
            event_id=outcome_event_id(row["request_id"], outcome), occurred_at=datetime.now(timezone.utc),
        )
        await write_outbox(conn, topic=self.service.topics(type(payload).TOPIC), key=row["entity_key"],
                           value=encode(envelope), headers=current_trace_headers(), event_id=envelope.event_id)


async def run_sender(service: HubService) -> None:
    """Background job registered with HubService."""
    await Sender(service).run()
