"""Renders a notification from Jinja2 templates: subject, plain text and HTML, per locale.

Templates are files, `templates/<locale>/<kind>.{subject,txt,html}.j2`, so a
translator or operator edits text without touching code (HUB_TEMPLATES_DIR
points at a replacement tree). StrictUndefined makes a template's required
data explicit: a request lacking it fails to render, which the handler turns
into a dead letter with the reason instead of mailing a half-empty message.
HTML templates are autoescaped (data comes from upstream systems).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

PACKAGED = Path(__file__).parent / "templates"
PARTS = ("subject", "txt", "html")


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

    def has(self, kind: str, locale: str) -> bool:
        names = set(self.env.list_templates())
        return all(f"{locale}/{kind}.{part}.j2" in names for part in PARTS)

    def render(self, kind: str, locale: str, context: dict[str, Any]) -> Rendered:
        if not self.has(kind, locale):
            raise TemplateMissing(f"no template for kind {kind!r} in locale {locale!r}")
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
