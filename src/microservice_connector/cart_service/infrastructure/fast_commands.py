"""A route class whose plainly valid requests skip FastAPI's request machinery, nothing else.

FastAPI's per-request work around an endpoint (its `Request`, dependency solving, two exit
stacks, the exception wrapper) cost about 80 µs per command here, eight times the command
itself. `CommandRoute` keeps the route as FastAPI declares and documents it and adds a lane in
front of its handler: the lane validates each declared parameter with the route's own pydantic
field (`ModelField.validate`, as FastAPI does) and calls the route's own endpoint. A request it
cannot read plainly (an odd header, a repeated or unknown query key, a body that is not
`application/json`, any value its field rejects) goes to FastAPI's handler as it came, which
then answers, or rejects, exactly as before; but a query key the route does not take is
refused (422) rather than ignored as FastAPI would. So each command, its rules and its answers are
defined once, by the endpoint and its declared parameters; the lane only skips the plumbing.

`CommandLanes` puts the lanes in front of the router's search, behind the app's middleware
and exception handlers: the matched route sets the metrics label (`scope["route"]`), a failed
command raises into the app's exception middleware like any route, and every middleware sees
every command, whichever lane answers it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Iterable
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.routing import Match

from microservice_connector.web.guards import ASGIApp, Receive, Scope, Send
from microservice_connector.web.request_body import handing_on, read_body

Values = dict[str, Any]
_CONTENT_TYPE = b"content-type"
_IMMUTABLE = (type(None), bool, int, float, str, bytes)


class CommandRoute(APIRoute):
    """An `APIRoute` (same path, parameters, OpenAPI and answers) with a lane that answers
    its plainly valid requests without FastAPI's dependency solving; `answered` counts them."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        super().__init__(path, endpoint, **options)
        dependant = self.dependant
        if dependant.dependencies or dependant.cookie_params or len(dependant.body_params) > 1:
            raise TypeError(f"{path}: a command route takes path, query, header and one body")
        self.answered = 0
        self._path_fields = tuple(dependant.path_params)
        self._queries = {field.alias: field for field in dependant.query_params}
        self._headers = {_header_key(field): field for field in dependant.header_params}
        self._read_headers = {*self._headers, _CONTENT_TYPE}
        self._body = dependant.body_params[0] if dependant.body_params else None
        self._defaults: Values = {}  # taken once: FastAPI copies each, so they must not change
        for field in (*dependant.query_params, *dependant.header_params):
            if not field.field_info.is_required():
                if not isinstance(field.default, _IMMUTABLE):
                    raise TypeError(f"{path}: {field.name} needs a default that cannot change")
                self._defaults[field.name] = field.default

    async def answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a request this route matched: through the lane when every parameter is
        plainly valid, else through FastAPI's handler (`handle`), body and all."""
        values, receive = await self.read_plainly(scope, receive)
        if values is None:
            await self.handle(scope, receive, send)
        else:
            await self.execute(values, scope, receive, send)

    async def read_plainly(self, scope: Scope, receive: Receive) -> tuple[Values | None, Receive]:
        """The route's validated values if every parameter of this matched request (its
        `path_params` in `scope`) is plainly valid, else None; and the `receive` to go on
        with, which hands on a body read but not used."""
        found = self._parameters(scope)
        if found is None:
            return None, receive
        values, headers = found
        if self._body is not None:
            body, first = await read_body(receive)
            if first["type"] != "http.request" or not self._valid_json(headers, body, values):
                return None, handing_on(first, receive)
        return values, receive

    async def execute(self, values: Values, scope: Scope, receive: Receive, send: Send) -> None:
        """Call the endpoint with the `values` `read_plainly` gave, and send its answer."""
        self.answered += 1
        response = await self.endpoint(**values)
        if not isinstance(response, Response):
            raise TypeError(f"{self.path}: a command endpoint must return a Response")
        await response(scope, receive, send)

    def _parameters(self, scope: Scope) -> tuple[Values, dict[bytes, bytes]] | None:
        """The validated path, query and header values, and the headers the lane reads by
        lower-case name; None if any is not plain."""
        values: Values = {}
        path_params = scope["path_params"]
        for field in self._path_fields:
            if not self._valid(field, path_params.get(field.alias), values):
                return None
        query = scope.get("query_string")
        queries = (
            _unique(parse_qsl(query.decode("latin-1"), keep_blank_values=True)) if query else {}
        )
        if queries is None or not queries.keys() <= self._queries.keys():
            return None
        headers: dict[bytes, bytes] = {}
        for name, value in scope.get("headers") or ():
            if (key := name.lower()) in self._read_headers:
                if key in headers:
                    return None  # a repeated header: which one counts is FastAPI's call
                headers[key] = value
        for alias, field in self._queries.items():
            if not self._valid(field, queries.get(alias), values):
                return None
        for name, field in self._headers.items():
            raw = headers.get(name)
            if not self._valid(field, None if raw is None else raw.decode("latin-1"), values):
                return None
        return values, headers

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler of the route, refusing first what `_refuse_odd_queries` does."""
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            self._refuse_odd_queries(request.scope)
            return await handler(request)

        return checked

    def _refuse_odd_queries(self, scope: Scope) -> None:
        """Raise `RequestValidationError` (422) naming a query key the route does not take,
        or one given twice: FastAPI ignores the first and takes the last of the second, and a
        command's typo (`?quantiy=1` on a removal) must not change what it does (remove
        everything)."""
        query = scope.get("query_string")
        if not query:
            return
        taken = ", ".join(self._queries) or "none"
        problems: list[dict[str, Any]] = []
        seen: set[str] = set()
        for name, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if name not in self._queries:
                why = f"not a query parameter of this command (it takes: {taken})"
            elif name in seen:
                why = "given more than once"
            else:
                seen.add(name)
                continue
            problems.append({"type": "value_error", "loc": ("query", name), "msg": why})
        if problems:
            raise RequestValidationError(problems)

    def _valid(self, field: Any, raw: object, values: Values) -> bool:
        """Validate `raw` (None: absent) with the route's own field into `values`."""
        if raw is None:
            if field.name not in self._defaults:
                return False  # required: FastAPI tells the client so
            values[field.name] = self._defaults[field.name]
            return True
        value, errors = field.validate(raw, values, loc=())
        if errors:
            return False
        values[field.name] = value
        return True

    def _valid_json(self, headers: dict[bytes, bytes], body: bytes, values: Values) -> bool:
        """Validate a plain JSON body with the route's body field into `values`. A body
        that is not UTF-8 without a BOM goes to FastAPI, whose `json.loads` of the bytes
        would read it the same way as this one of the text when it is."""
        if headers.get(_CONTENT_TYPE) != b"application/json":
            return False
        try:
            data = json.loads(body.decode("utf-8"))
        except (ValueError, RecursionError):  # nested too deep for the parser: not plain
            return False
        return data is not None and self._valid(self._body, data, values)


class CommandLanes:
    """The router's innermost layer: a request that fully matches a `CommandRoute` goes to
    its `answer` without the router's search through every route; the rest go on to the
    router. Behind the app's middleware and exception handlers, like any route."""

    def __init__(self, router: ASGIApp, routes: CommandRoutes) -> None:
        self._router = router
        self._routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (route := self._routes.matching(scope)) is not None:
            await route.answer(scope, receive, send)
            return
        await self._router(scope, receive, send)


class CommandRoutes:
    """The `CommandRoute`s of an app, found by method and path."""

    def __init__(self, routes: Iterable[CommandRoute]) -> None:
        self._by_method: dict[str, list[CommandRoute]] = {}
        for route in routes:
            for method in route.methods or ():
                self._by_method.setdefault(method, []).append(route)

    @classmethod
    def of(cls, app: FastAPI) -> CommandRoutes:
        """The command routes `app` has now."""
        return cls(route for route in app.routes if isinstance(route, CommandRoute))

    def matching(self, scope: Scope) -> CommandRoute | None:
        """The command route that fully matches the HTTP request, with its route, endpoint
        and path params put in `scope`; None if none does."""
        for route in self._by_method.get(scope["method"], ()):
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                scope.update(child_scope)
                return route
        return None


def install_command_lanes(app: FastAPI) -> None:
    """Put `CommandLanes` for `app`'s command routes in front of its router (as a router
    built with `middleware=` would have it)."""
    app.router.middleware_stack = CommandLanes(app.router.middleware_stack, CommandRoutes.of(app))


def _header_key(field: Any) -> bytes:
    """The lower-case header name FastAPI reads a header parameter from."""
    name: str = field.alias if field.alias != field.name else field.name.replace("_", "-")
    return name.lower().encode("latin-1")


def _unique(pairs: Iterable[tuple[str, str]]) -> dict[str, str] | None:
    """`pairs` as a dict, or None if a name repeats (which of them counts is FastAPI's call)."""
    found: dict[str, str] = {}
    for name, value in pairs:
        if name in found:
            return None
        found[name] = value
    return found
