"""Published contracts: JSON Schema of every event, AsyncAPI of every service, OpenAPI of every HTTP API.

`python -m hub_platform.contracts export DIR` writes them; `check DIR` fails
when the committed files and the code disagree (a test runs it too). Services
are found through the `hub.services` entry point group, so the platform does
not import any service by name.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import entry_points
from pathlib import Path

from hub_schema import Envelope, all_events
from hub_schema.topics import CATALOG


def event_schemas() -> dict[str, dict]:
    out: dict[str, dict] = {}
    envelope = Envelope.model_json_schema()
    out["envelope.json"] = envelope
    for (event_type, version), model in all_events().items():
        schema = model.model_json_schema()
        schema["title"] = f"{event_type} v{version}"
        schema["x-topic"] = model.TOPIC
        schema["x-event-type"] = event_type
        schema["x-version"] = version
        out[f"events/{event_type}.v{version}.json"] = schema
    out["topics.json"] = {
        "topics": [
            {"name": t.name, "partitions": t.partitions, "key": t.key, "producers": list(t.producers),
             "consumers": list(t.consumers), "description": t.description}
            for t in CATALOG
        ]
    }
    return out


def service_builders() -> dict[str, object]:
    return {ep.name: ep for ep in entry_points(group="hub.services")}


def asyncapi_documents() -> dict[str, dict]:
    from hub_platform.settings import ServiceSettings

    docs: dict[str, dict] = {}
    for name, ep in sorted(service_builders().items()):
        build = ep.load()
        service = build(ServiceSettings(service_name=name))
        docs[f"asyncapi/{name}.json"] = json.loads(service.asyncapi_json())
    return docs


def openapi_documents() -> dict[str, dict]:
    """The generated OpenAPI document of every service with an API (what it serves at /api/v1/openapi.json)."""
    from hub_platform.settings import ServiceSettings

    docs: dict[str, dict] = {}
    for name, ep in sorted(service_builders().items()):
        service = ep.load()(ServiceSettings(service_name=name))
        if service.has_api:
            docs[f"openapi/{name}.json"] = service.openapi()
    return docs


def render() -> dict[str, str]:
    files = {**event_schemas(), **asyncapi_documents(), **openapi_documents()}
    return {path: json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n" for path, doc in files.items()}


def export(root: Path) -> list[str]:
    rendered = render()
    for path in root.rglob("*.json"):
        if str(path.relative_to(root)) not in rendered:
            path.unlink()
    for rel, text in rendered.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return sorted(rendered)


def differences(root: Path) -> list[str]:
    rendered = render()
    problems = []
    for rel, text in rendered.items():
        target = root / rel
        if not target.exists():
            problems.append(f"missing: {rel}")
        elif target.read_text() != text:
            problems.append(f"differs: {rel}")
    for path in root.rglob("*.json"):
        if str(path.relative_to(root)) not in rendered:
            problems.append(f"no longer produced: {path.relative_to(root)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 2 or args[0] not in ("export", "check"):
        print("usage: python -m hub_platform.contracts export|check DIR", file=sys.stderr)
        return 2
    root = Path(args[1])
    if args[0] == "export":
        written = export(root)
        print(f"wrote {len(written)} contract files to {root}/")
        return 0
    problems = differences(root)
    for p in problems:
        print(p)
    if problems:
        print("contracts are out of date: run `make contracts` and commit the result", file=sys.stderr)
        return 1
    print("contracts match the code")
    return 0


if __name__ == "__main__":
    sys.exit(main())
