"""Which HUB_* environment variables a settings class reads, and which set ones nobody reads.

pydantic-settings ignores an unknown variable (``extra="ignore"``), so a typo such as
HUB_KAFKA_BOOTSTRAP_SERVERS (one underscore) would leave a service on its local default with
no word said. The names are derived from the class itself (fields, recursively, env prefix +
nested delimiter, aliases as pydantic-settings uses them); services warn at start-up about
the rest, and tests/test_deploy_config.py holds the deployment files to the same list.
"""

from __future__ import annotations

import difflib
import functools
import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from importlib import import_module
from importlib.metadata import entry_points

from pydantic import AliasChoices, AliasPath, BaseModel
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

#: HUB_* variables read by the project's tools, not by a service (local stack, tests, bench, faults)
TOOL_VARIABLES = ("HUB_LOCAL_", "HUB_TEST_", "HUB_BENCH_", "HUB_STATE_DIR", "HUB_CACHE_DIR", "HUB_FAILPOINT",
                  "HUB_REPO_ROOT")


def _model_types(annotation: object) -> Iterator[type[BaseModel]]:
    """The BaseModel classes in an annotation (Model, Model | None, Annotated[Model, ...])."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        yield from _model_types(typing.get_args(annotation)[0])
    elif origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            yield from _model_types(arg)
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation


def _aliases(info: FieldInfo) -> list[str]:
    """Env names given by an alias; pydantic-settings uses them as they are (no env prefix)."""
    alias = info.validation_alias if info.validation_alias is not None else info.alias
    if alias is None:
        return []
    if isinstance(alias, str):
        return [alias]
    choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
    names = []
    for choice in choices:
        if isinstance(choice, str):
            names.append(choice)
        elif isinstance(choice, AliasPath) and isinstance(choice.path[0], str):
            names.append(choice.path[0])
    return names


def _nested_names(model: type[BaseModel], parent: str, delimiter: str) -> Iterator[str]:
    for name, info in model.model_fields.items():
        for key in _aliases(info) or [name]:
            env = f"{parent}{delimiter}{key}"
            yield env
            for nested in _model_types(info.annotation):
                yield from _nested_names(nested, env, delimiter)


@functools.cache
def env_names(cls: type[BaseSettings]) -> frozenset[str]:
    """Every environment variable `cls` reads, upper-case (HUB_HTTP_PORT, HUB_KAFKA__BOOTSTRAP_SERVERS...)."""
    config = cls.model_config
    if config.get("case_sensitive"):
        raise ValueError(f"{cls.__name__} is case-sensitive: env names are compared upper-case")
    prefix = config.get("env_prefix", "") or ""
    delimiter = config.get("env_nested_delimiter") or ""
    names: set[str] = set()
    for name, info in cls.model_fields.items():
        tops = _aliases(info) or [prefix + name]
        names.update(tops)
        if delimiter:
            for top in tops:
                for model in _model_types(info.annotation):
                    names.update(_nested_names(model, top, delimiter))
    return frozenset(n.upper() for n in names)


@functools.cache
def other_services_names() -> frozenset[str]:
    """Names read by any installed hub service (entry points `hub.services`, settings in hub_<name>.settings):
    a shared ConfigMap or env file sets HUB_SMTP__HOST for everyone, which is not a typo."""
    names: set[str] = set()
    for ep in entry_points(group="hub.services"):
        try:
            module = import_module(ep.module.rsplit(".", 1)[0] + ".settings")
        except ImportError:
            continue
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, BaseSettings) and obj.__module__ == module.__name__:
                names |= env_names(obj)
    return frozenset(names)


def unread_variables(cls: type[BaseSettings], environ: Mapping[str, str],
                     also_known: Iterable[str] = ()) -> list[tuple[str, str | None]]:
    """HUB_* variables set in `environ` that neither `cls`, another hub service nor a tool reads,
    each with the closest name `cls` does read (a likely typo) or None."""
    valid = env_names(cls)
    known = valid | set(also_known)
    out = []
    for key in sorted(environ):
        upper = key.upper()
        if not upper.startswith("HUB_") or upper in known or upper.startswith(TOOL_VARIABLES):
            continue
        close = difflib.get_close_matches(upper, sorted(valid), n=1, cutoff=0.8)
        out.append((key, close[0] if close else None))
    return out
