"""The HTTP trust boundary every service shares: who is calling, how big a body may be, how lists page.

Why it is shaped like this:
- one place decides who a caller is (`ServiceKeyAuth`: an org, named by its key and never by
  a parameter; `TokenAuth`: an operator or admin holding a configured token) and every
  tenant endpoint is declared with `endpoint(auth=...)`, so an endpoint cannot forget it;
- a configured token that is empty authenticates nobody (`compare_digest(b"", b"")` is true,
  so an empty secret used to let a request without a header in); a service whose token is
  empty, short or a published default refuses to start unless it listens on loopback;
- inputs are pydantic models (query, path, body), so bad input is a 422 naming the field and
  never an `assert` (which `python -O` removes);
- bodies are capped by one ASGI middleware before any endpoint reads them (413), and every list
  pages through one `Page` model with a bounded `limit` and a keyset cursor.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub_platform.logs import get_logger

log = get_logger(__name__)

#: Tokens that were published in this repository (defaults, examples, tests): never good enough off loopback.
KNOWN_DEFAULT_TOKENS = frozenset({
    "local-linking-admin-token", "e2e-admin-token", "test-admin-token", "CHANGE-ME", "change-me", "changeme",
    "secret", "admin", "token", "password",
})
MIN_TOKEN_BYTES = 32
DEFAULT_MAX_BODY_BYTES = 64 * 1024
MAX_PAGE_SIZE = 500

M = TypeVar("M", bound=BaseModel)


# -- errors ---------------------------------------------------------------------------------------


class HttpError(Exception):
    """An answer other than success, in the one error shape: {"error": code, "detail": text, ...}."""

    def __init__(self, status: int, error: str, detail: str, *, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail, self.headers, self.extra = status, error, detail, headers, extra

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.error, "detail": self.detail, **self.extra}, status_code=self.status,
                            headers=self.headers)


def unauthorized(detail: str) -> HttpError:
    return HttpError(401, "unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})


def forbidden(detail: str) -> HttpError:
    return HttpError(403, "forbidden", detail)


# -- who is calling -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: an org (by its service key) or an operator/admin (by a configured token)."""

    kind: Literal["org", "operator", "admin"]
    org_id: str | None = None

    def require_org(self, org_id: str) -> None:
        """An org may act on its own data only; an operator may act for any org."""
        if self.kind == "org" and self.org_id != org_id:
            raise forbidden("this service key belongs to another org")


def presented_credential(request: Request) -> str | None:
    """`Authorization: Bearer <secret>` or `X-Hub-Service-Key: <secret>`; None when absent or blank."""
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return (request.headers.get("x-hub-service-key") or "").strip() or None


def key_sha256(key: str) -> str:
    """Service keys are stored and published only as their SHA-256 (hex)."""
    return hashlib.sha256(key.encode()).hexdigest()


class Auth:
    """Decides who a request comes from, or raises 401."""

    description = ""

    async def __call__(self, request: Request) -> Caller:  # pragma: no cover - interface
        raise NotImplementedError


KeyLookup = Callable[[Any, str], Awaitable[str | None]]


class ServiceKeyAuth(Auth):
    """The org's service key (S24): the org is the key's, never a parameter of the request."""

    description = "the org's service key"

    def __init__(self, pool: Callable[[], Any], lookup: KeyLookup) -> None:
        self.pool, self.lookup = pool, lookup

    async def __call__(self, request: Request) -> Caller:
        key = presented_credential(request)
        if key is None:
            raise unauthorized("a service key is required (Authorization: Bearer <key>)")
        sha = key_sha256(key)
        async with self.pool().acquire() as conn:
            org = await self.lookup(conn, sha)
        if org is None:
            raise unauthorized("unknown or replaced service key")
        return Caller("org", org)


class TokenAuth(Auth):
    """A token from the service's settings (operator, admin). An empty configured token accepts no one."""

    def __init__(self, token: Callable[[], SecretStr | None], kind: Literal["operator", "admin"], env_name: str) -> None:
        self.token, self.kind, self.env_name = token, kind, env_name
        self.description = f"the {kind} token ({env_name})"

    async def __call__(self, request: Request) -> Caller:
        configured = self.token()
        expected = configured.get_secret_value().encode() if configured is not None else b""
        if not expected:
            raise unauthorized(f"{self.env_name} is not set: this endpoint is closed")
        presented = (presented_credential(request) or "").encode()
        if not presented or not hmac.compare_digest(presented, expected):
            raise unauthorized(f"a valid {self.kind} token is required")
        return Caller(self.kind)


class AnyOf(Auth):
    """The first of several ways that accepts the request (e.g. the org's key or the operator token)."""

    def __init__(self, *ways: Auth) -> None:
        self.ways = ways
        self.description = " or ".join(w.description for w in ways)

    async def __call__(self, request: Request) -> Caller:
        for way in self.ways:
            try:
                return await way(request)
            except HttpError as exc:
                if exc.status != 401:
                    raise
        raise unauthorized(f"{self.description} is required")


# -- tokens at start-up ---------------------------------------------------------------------------


class InsecureTokenError(RuntimeError):
    """A service reachable from other machines would be guarded by a guessable token."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def token_problem(token: SecretStr | None) -> str | None:
    """Why a token is not good enough to guard an endpoint reachable from other machines, or None."""
    value = token.get_secret_value() if token is not None else ""
    if not value:
        return "empty"
    if value in KNOWN_DEFAULT_TOKENS:
        return "a published default"
    if len(value.encode()) < MIN_TOKEN_BYTES:
        return f"shorter than {MIN_TOKEN_BYTES} bytes"
    return None


def require_strong_tokens(tokens: dict[str, SecretStr | None], host: str) -> None:
    """Refuse to start with a weak token unless only this machine can connect (then warn)."""
    for env_name, token in tokens.items():
        problem = token_problem(token)
        if problem is None:
            continue
        if not is_loopback(host):
            raise InsecureTokenError(
                f"{env_name} is {problem} and the service listens on {host}: set it from a secret "
                f"(at least {MIN_TOKEN_BYTES} random bytes, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
        log.warning("weak token accepted because the service listens on loopback only", variable=env_name,
                    problem=problem, http_host=host)


# -- inputs -----------------------------------------------------------------------------------------


class Input(BaseModel):
    """Base of every HTTP input model: unknown fields are refused, strings stripped of nothing."""

    model_config = ConfigDict(extra="forbid")


class Page(Input):
    """One page of a list: at most `limit` items after the cursor `after` (keyset, stable under inserts)."""

    limit: int = Field(100, ge=1, le=MAX_PAGE_SIZE, description=f"items per page, 1..{MAX_PAGE_SIZE}")
    after: int | None = Field(None, ge=0, description="the `next` cursor of the previous page")


def paged(items: Sequence[dict[str, Any]], page: Page, cursor: Callable[[dict[str, Any]], int]) -> dict[str, Any]:
    """`items` fetched with LIMIT page.limit + 1: the page, and the cursor of the next one (None at the end)."""
    more = len(items) > page.limit
    shown = list(items[: page.limit])
    return {"items": shown, "next": cursor(shown[-1]) if more and shown else None, "limit": page.limit}


def _invalid(exc: ValidationError, where: str) -> HttpError:
    problems = [{"where": where, "field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]}
                for e in exc.errors(include_url=False, include_input=False)]
    return HttpError(422, "invalid", f"invalid {where}: " + "; ".join(f"{p['field'] or where}: {p['problem']}"
                                                                       for p in problems), problems=problems)


def _query_dict(request: Request) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in request.query_params.multi_items():
        if k in out:
            raise HttpError(422, "invalid", f"query parameter {k} given twice")
        out[k] = v
    return out


async def _parse_body(request: Request, model: type[M]) -> M:
    raw = await request.body()
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise _invalid(exc, "body") from None


Handler = Callable[..., Awaitable[Response]]


def endpoint(auth: Auth | None, *, path: type[BaseModel] | None = None, query: type[BaseModel] | None = None,
             body: type[BaseModel] | None = None) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """Wraps `fn(request, caller, *, path=, query=, body=)` into a Starlette endpoint.

    `auth` runs first (401 before anything about the input is revealed); then the path, query
    and body are validated by their models (422); an `HttpError` raised anywhere becomes its
    response. `auth=None` marks an endpoint that is public on purpose (health, documents).
    """

    def wrap(fn: Handler) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(fn)
        async def run(request: Request) -> Response:
            try:
                caller = await auth(request) if auth is not None else None
                kwargs: dict[str, Any] = {}
                if path is not None:
                    try:
                        kwargs["path"] = path.model_validate(dict(request.path_params))
                    except ValidationError as exc:
                        raise _invalid(exc, "path") from None
                if query is not None:
                    try:
                        kwargs["query"] = query.model_validate(_query_dict(request))
                    except ValidationError as exc:
                        raise _invalid(exc, "query") from None
                if body is not None:
                    kwargs["body"] = await _parse_body(request, body)
                return await fn(request, caller, **kwargs)
            except HttpError as exc:
                return exc.response()

        run.auth = auth  # type: ignore[attr-defined]  # read by tests that list every route's guard
        return run

    return wrap


# -- body size ------------------------------------------------------------------------------------


class BodySizeLimit:
    """ASGI middleware: a request body over `max_bytes` is answered 413 before an endpoint reads it.

    A declared Content-Length is checked up front; a chunked body is counted as it streams in.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = HttpError(413, "too_large", f"request body over {self.max_bytes} bytes", max_bytes=self.max_bytes)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await too_big.response()(scope, receive, send)  # an unreadable length is not trusted either
                    return
                if declared > self.max_bytes:
                    await too_big.response()(scope, receive, send)
                    return
        seen = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _BodyTooLarge:
            if not started:
                await too_big.response()(scope, receive, send)


class _BodyTooLarge(Exception):
    pass
