"""Renders a notification from Jinja2 templates: subject, plain text and HTML, per locale.

Templates are files, `templates/<locale>/<kind>.{subject,txt,html}.j2`, so a
translator or operator edits text without touching code (HUB_TEMPLATES_DIR
points at a replacement tree). StrictUndefined makes a template's required
data explicit: a request lacking it fails to render, which the handler turns
into a dead letter with the reason instead of mailing a half-empty message.
HTML templates are autoescaped (data comes from upstream systems).

What a person reads is in their language throughout: a refusal's reason is
rendered from its `reason_code` and `reason_params` by the locale's
`_parts` templates (the producer's English `reason` sentence is only a
fallback in English mail), and times are shown with Babel in the recipient's
locale and time zone (`recipient.time_zone`, else the locale's usual one).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from babel.dates import format_date, format_datetime

PACKAGED = Path(__file__).parent / "templates"
PARTS = ("subject", "txt", "html")
DEFAULT_TIME_ZONES = {"ja": "Asia/Tokyo"}
"""The time zone a recipient with none of their own most likely lives in, per locale (else UTC)."""


def time_zone_of(requested: str | None, locale: str) -> ZoneInfo:
    """The recipient's IANA time zone if it is a known one, else the locale's default."""
    for name in (requested, DEFAULT_TIME_ZONES.get(locale, "UTC")):
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def local_datetime(value: datetime | str | None, locale: str, time_zone: str | None) -> str:
    """A timestamp as the recipient reads it: `2026年11月30日 16:50:04 JST`, `November 30, 2026, 7:50:04 AM UTC`."""
    if value is None or value == "":
        return ""
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    if when.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no time zone")
    return format_datetime(when, "long", tzinfo=time_zone_of(time_zone, locale), locale=locale)


def local_date(value: date | str | None, locale: str) -> str:
    """A calendar date in the recipient's language: `2026年12月10日`, `December 10, 2026`."""
    if value is None or value == "":
        return ""
    day = date.fromisoformat(value[:10]) if isinstance(value, str) else value
    return format_date(day, "long", locale=locale)


@jinja2.pass_context
def _datetime_filter(ctx: jinja2.runtime.Context, value: Any) -> str:
    return local_datetime(value, ctx.get("locale", "en"), ctx.get("time_zone"))


@jinja2.pass_context
def _date_filter(ctx: jinja2.runtime.Context, value: Any) -> str:
    return local_date(value, ctx.get("locale", "en"))


class TemplateMissing(Exception):
    pass


class TemplateDataError(Exception):
    pass


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


class Renderer:
    def __init__(self, templates_dir: Path | None = None) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(templates_dir or PACKAGED)),
            undefined=jinja2.StrictUndefined,
            autoescape=lambda name: bool(name and name.endswith(".html.j2")),
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self.env.filters["datetime"] = _datetime_filter
        self.env.filters["date"] = _date_filter

    def has(self, kind: str, locale: str) -> bool:
        names = set(self.env.list_templates())
        return all(f"{locale}/{kind}.{part}.j2" in names for part in PARTS)

    def reason(self, code: str | None, locale: str, params: dict[str, Any] | None = None,
               fallback: str | None = None) -> str:
        """A reason code (+ its parameters) as a sentence in `locale`; `fallback` is used by English only."""
        module = self.env.get_template(f"{locale}/_reasons.j2").module
        return str(module.text(code, params or {}, fallback)).strip()  # type: ignore[attr-defined]

    def render(self, kind: str, locale: str, context: dict[str, Any]) -> Rendered:
        if not self.has(kind, locale):
            raise TemplateMissing(f"no template for kind {kind!r} in locale {locale!r}")
        context = {"time_zone": (context.get("recipient") or {}).get("time_zone"), **context, "locale": locale}
        out: dict[str, str] = {}
        for part in PARTS:
            name = f"{locale}/{kind}.{part}.j2"
            try:
                out[part] = self.env.get_template(name).render(**context, subject=" ".join(out.get("subject", "").split()))
            except jinja2.UndefinedError as exc:
                raise TemplateDataError(f"template {name} needs data the request does not carry: {exc.message}") from None
            except (jinja2.TemplateError, TypeError, ValueError) as exc:
                raise TemplateDataError(f"template {name} failed: {type(exc).__name__}: {exc}") from None
        subject = " ".join(out["subject"].split())
        if not subject:
            raise TemplateDataError(f"template {locale}/{kind}.subject.j2 rendered an empty subject")
        return Rendered(subject=subject[:250], text=out["txt"], html=out["html"])
