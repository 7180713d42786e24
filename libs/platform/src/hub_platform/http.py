"""The HTTP trust boundary every service shares: who is calling, how big a body may be, how lists page.

Why it is shaped like this:
- one way to attach routes: a service's `HubApi` (FastAPI underneath: pydantic v2 inputs,
  dependencies, a generated OpenAPI document), whose `get/post/put/...` take `auth=` as a
  required keyword, so an endpoint cannot forget it (`auth=None` says "public on purpose");
- one place decides who a caller is (`ServiceKeyAuth`: an org, named by its key and never by
  a parameter; `TokenAuth`: an operator or admin holding a configured token; `UpstreamSecretAuth`:
  Zoho calling for an org with that org's shared secret); the auth is one
  FastAPI security dependency, so the OpenAPI document names it for every operation, and it runs
  before the request's input is read (401 before anything about the input is revealed);
- a configured token that is empty authenticates nobody (`compare_digest(b"", b"")` is true,
  so an empty secret used to let a request without a header in); a service whose token is
  empty, short or a published default refuses to start unless it listens on loopback;
- inputs are pydantic (path parameters, a query model, a body model), so bad input is a 422
  naming the field in the one error shape, never an `assert` (which `python -O` removes);
- bodies are capped by one ASGI middleware before any endpoint reads them (413), and every list
  pages through one `Page` model with a bounded `limit` and a keyset cursor.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import ipaddress
import typing
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from fastapi import Body as Body  # re-exported with Path and Query: a service's API imports its HTTP vocabulary
from fastapi import FastAPI, Security  # from hub_platform.http only
from fastapi import Path as Path
from fastapi import Query as Query
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.models import APIKey, APIKeyIn
from fastapi.openapi.models import HTTPBase as HTTPBaseModel
from fastapi.routing import APIRoute, APIRouter
from fastapi.security.base import SecurityBase
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute
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


class Problem(BaseModel):
    where: str = Field(description="path, query or body")
    field: str
    problem: str


class ErrorBody(BaseModel):
    """The one error shape of every endpoint (documented in the OpenAPI document)."""

    error: str = Field(description="a code: unauthorized, forbidden, not_found, invalid, too_large, ...")
    detail: str
    problems: list[Problem] | None = Field(None, description="what is wrong with the input (422)")


def unauthorized(detail: str) -> HttpError:
    return HttpError(401, "unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})


def forbidden(detail: str) -> HttpError:
    return HttpError(403, "forbidden", detail)


# -- who is calling -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: an org (by its service key), an operator/admin (by a configured token) or an
    upstream system calling for an org (Zoho, by the org's shared secret)."""

    kind: Literal["org", "operator", "admin", "upstream"]
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


class Auth(SecurityBase):
    """Decides who a request comes from, or raises 401. A FastAPI security dependency: the OpenAPI
    document lists it as the operation's security scheme (`scheme_name`, an HTTP bearer)."""

    description = ""
    scheme_name = "auth"
    refusal_status = 401  # what a missing or wrong credential gets (documented in the OpenAPI document)

    def _scheme(self, scheme_name: str, description: str) -> None:
        self.scheme_name, self.description = scheme_name, description
        self.model = HTTPBaseModel(scheme="bearer", description=description)

    async def __call__(self, request: Request) -> Caller:
        """The caller, decided once per request (the route decides it before reading the input)."""
        decided = request.scope.get(_CALLER_SCOPE_KEY)
        if decided is not None and decided[0] is self:
            return decided[1]  # type: ignore[no-any-return]
        caller = await self.authenticate(request)
        request.scope[_CALLER_SCOPE_KEY] = (self, caller)
        return caller

    async def authenticate(self, request: Request) -> Caller:  # pragma: no cover - interface
        raise NotImplementedError


_CALLER_SCOPE_KEY = "hub.caller"


KeyLookup = Callable[[Any, str], Awaitable[str | None]]


class ServiceKeyAuth(Auth):
    """The org's service key (S24): the org is the key's, never a parameter of the request."""

    def __init__(self, pool: Callable[[], Any], lookup: KeyLookup) -> None:
        self.pool, self.lookup = pool, lookup
        self._scheme("serviceKey", "the org's service key (S24): `Authorization: Bearer <key>` or `X-Hub-Service-Key`")

    async def authenticate(self, request: Request) -> Caller:
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
        self._scheme(f"{kind}Token", f"the {kind} token ({env_name})")

    async def authenticate(self, request: Request) -> Caller:
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
        self._scheme("Or".join(w.scheme_name for w in ways), " or ".join(w.description for w in ways))

    async def authenticate(self, request: Request) -> Caller:
        for way in self.ways:
            try:
                return await way.authenticate(request)
            except HttpError as exc:
                if exc.status != 401:
                    raise
        raise unauthorized(f"{self.description} is required")


class UpstreamSecretAuth(Auth):
    """An upstream system (Zoho) calling for the org in the path, holding that org's shared secret.

    `secret_of(org_id)` is the configured secret (None: the org has none, nobody is let in; it may raise
    an HttpError, e.g. 404 for an org it does not serve); `presented(request)` reads what the caller sent
    (a header, or a field of the body Zoho echoes). Compared in constant time; a wrong one is a 403 and
    `on_refused(request)` logs and counts it as a possible forgery.
    """

    def __init__(self, scheme_name: str, description: str, *, secret_of: Callable[[str], SecretStr | None],
                 presented: Callable[[Request], Awaitable[str | None]],
                 on_refused: Callable[[Request], None] | None = None, header: str | None = None) -> None:
        self.secret_of, self.presented, self.on_refused = secret_of, presented, on_refused
        self.refusal_status = 403
        self._scheme(scheme_name, description)
        if header is not None:
            self.model = APIKey(**{"in": APIKeyIn.header}, name=header, description=description)

    async def authenticate(self, request: Request) -> Caller:
        org_id = str(request.path_params.get("org_id", ""))
        configured = self.secret_of(org_id)
        expected = configured.get_secret_value().encode() if configured is not None else b""
        sent = ((await self.presented(request)) or "").encode()
        if not expected or not sent or not hmac.compare_digest(sent, expected):
            if self.on_refused is not None:
                self.on_refused(request)
            raise forbidden(f"{self.description}: wrong or missing")
        return Caller("upstream", org_id)


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
    """Base of every HTTP input model (query and body): unknown fields are refused."""

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


def invalid(errors: Sequence[Any]) -> HttpError:
    """FastAPI's / pydantic's validation errors as the one 422: `problems` name where (path, query, body) and the field."""
    problems = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ())]
        where = loc[0] if loc and loc[0] in ("path", "query", "body", "header") else "input"
        field = ".".join(loc[1:] if loc and loc[0] == where else loc)
        problems.append({"where": where, "field": field, "problem": e.get("msg", "invalid")})
    detail = "; ".join(f"{p['where']} {p['field']}: {p['problem']}" if p["field"] else f"{p['where']}: {p['problem']}"
                       for p in problems)
    return HttpError(422, "invalid", f"invalid input: {detail}", problems=problems)


def _repeated_query_parameter(request: Request) -> str | None:
    seen: set[str] = set()
    for k, _ in request.query_params.multi_items():
        if k in seen:
            return k
        seen.add(k)
    return None


# -- routes -----------------------------------------------------------------------------------------


class GuardedRoute(APIRoute):
    """A FastAPI route that decides the caller first, then reads the input, and answers every refusal itself
    in the one error shape (so the route behaves the same in any app that includes it)."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handle = super().get_route_handler()
        auths = [d.dependency for d in self.dependencies if isinstance(d.dependency, Auth)]
        auth = auths[0] if auths else None

        async def guarded(request: Request) -> Response:
            try:
                if auth is not None:
                    await auth(request)
                repeated = _repeated_query_parameter(request)
                if repeated is not None:
                    raise HttpError(422, "invalid", f"query parameter {repeated} given twice",
                                    problems=[{"where": "query", "field": repeated, "problem": "given twice"}])
                return await handle(request)
            except HttpError as exc:
                return exc.response()
            except _BodyTooLarge as exc:
                return exc.error.response()
            except HTTPException as exc:  # FastAPI's own refusals (e.g. an unreadable body), in the one shape
                return HttpError(exc.status_code, "refused", str(exc.detail), headers=exc.headers).response()
            except RequestValidationError as exc:
                return invalid(exc.errors()).response()

        return guarded


Endpoint = TypeVar("Endpoint", bound=Callable[..., Awaitable[Any]])


class HubApi:
    """The one way a service attaches HTTP routes.

    `@api.get(path, auth=...)` (also post, put, patch, delete) registers an async function whose
    parameters FastAPI fills and validates: path parameters by name, a query model as
    `query: Annotated[Model, Query()]`, a body model as `body: Model`, and the authenticated
    `caller: Caller`. `auth` is required: an `Auth` (checked before any input is read, named in
    the OpenAPI document) or None for an endpoint public on purpose (`security: []` in the
    document). An endpoint returns a dict (JSON) or a Response, or raises `HttpError`.
    """

    def __init__(self) -> None:
        self.router = APIRouter(route_class=GuardedRoute)

    def route(self, method: str, path: str, *, auth: Auth | None, status_code: int = 200, summary: str | None = None,
              include_in_schema: bool = True) -> Callable[[Endpoint], Endpoint]:
        def attach(fn: Endpoint) -> Endpoint:
            self.router.add_api_route(
                path, _with_caller(fn, auth), methods=[method], status_code=status_code,
                dependencies=[Security(auth)] if auth is not None else [],
                openapi_extra=None if auth is not None else {"security": []},
                responses={422: {"model": ErrorBody, "description": "invalid input (the problems name the fields)"},
                           **({auth.refusal_status: {"model": ErrorBody,
                                                     "description": f"missing or wrong credential: {auth.description}"}}
                              if auth is not None else {})},
                summary=summary, description=inspect.getdoc(fn), include_in_schema=include_in_schema,
                response_class=JSONResponse,
            )
            route = self.router.routes[-1]
            assert isinstance(route, APIRoute)
            d = route.dependant
            if not (d.path_params or d.query_params or d.header_params or route.body_field):
                route.responses.pop(422, None)  # nothing to validate
            return fn

        return attach

    def get(self, path: str, *, auth: Auth | None, **kw: Any) -> Callable[[Endpoint], Endpoint]:
        return self.route("GET", path, auth=auth, **kw)

    def post(self, path: str, *, auth: Auth | None, **kw: Any) -> Callable[[Endpoint], Endpoint]:
        return self.route("POST", path, auth=auth, **kw)

    def put(self, path: str, *, auth: Auth | None, **kw: Any) -> Callable[[Endpoint], Endpoint]:
        return self.route("PUT", path, auth=auth, **kw)

    def patch(self, path: str, *, auth: Auth | None, **kw: Any) -> Callable[[Endpoint], Endpoint]:
        return self.route("PATCH", path, auth=auth, **kw)

    def delete(self, path: str, *, auth: Auth | None, **kw: Any) -> Callable[[Endpoint], Endpoint]:
        return self.route("DELETE", path, auth=auth, **kw)

    @property
    def routes(self) -> list[BaseRoute]:
        return list(self.router.routes)


def _with_caller(fn: Endpoint, auth: Auth | None) -> Endpoint:
    """A `caller` parameter is filled by the route's auth (the same dependency, so it runs once)."""
    sig = inspect.signature(fn)
    if "caller" not in sig.parameters:
        return fn
    if auth is None:
        raise TypeError(f"{fn.__qualname__} takes a caller but its route is public (auth=None)")
    hints = typing.get_type_hints(fn, include_extras=True)  # the module's names, as FastAPI would resolve them
    params = [p.replace(annotation=Annotated[Caller, Security(auth)] if p.name == "caller" else hints.get(p.name, p.annotation))
              for p in sig.parameters.values()]

    async def endpoint(*args: Any, **kwargs: Any) -> Any:
        return await fn(*args, **kwargs)

    endpoint.__signature__ = sig.replace(parameters=params, return_annotation=hints.get("return", sig.return_annotation))  # type: ignore[attr-defined]
    endpoint.__name__, endpoint.__qualname__, endpoint.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
    return endpoint  # type: ignore[return-value]


def app_of(routes: Sequence[BaseRoute], *, title: str = "hub", openapi_url: str | None = None, **kw: Any) -> FastAPI:
    """An ASGI app of these routes (what HubService serves; tests use it without the service's lifespan)."""
    return FastAPI(routes=list(routes), title=title, version="1.0.0", openapi_url=openapi_url, docs_url=None,
                   redoc_url=None, **kw)


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
                    raise _BodyTooLarge(too_big)
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


class _BodyTooLarge(HTTPException):
    """Raised while the body streams in; an HTTPException so FastAPI's body reading passes it on (it would
    make any other exception a 400), and answered as the 413 it carries."""

    def __init__(self, error: HttpError) -> None:
        super().__init__(error.status, error.detail)
        self.error = error
