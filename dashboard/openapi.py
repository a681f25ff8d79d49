"""The OpenAPI 3.1 document of the dashboard's JSON API, generated from the routes themselves: their
paths and methods, path parameters, the roles the guard allows, and the handlers' docstrings."""

from __future__ import annotations

import re

from starlette.routing import Route

_PARAM = re.compile(r"{([A-Za-z_]+)(?::([a-z]+))?}")


def document(app) -> dict:
    paths: dict[str, dict] = {}
    for route in app.routes:
        if not isinstance(route, Route) or not (route.path.startswith("/api/") or route.path in ("/login", "/logout")):
            continue
        if route.path == "/login" and "POST" not in (route.methods or ()):
            continue
        endpoint = route.endpoint
        roles = getattr(endpoint, "roles", ())
        public = getattr(endpoint, "public", False)
        doc = (endpoint.__doc__ or "").strip()
        summary = doc.splitlines()[0] if doc else endpoint.__name__
        path = _PARAM.sub(r"{\1}", route.path)
        parameters = [{"name": name, "in": "path", "required": True,
                       "schema": {"type": "integer" if kind == "int" else "string"}}
                      for name, kind in _PARAM.findall(route.path)]
        for method in sorted((route.methods or set()) - {"HEAD"}):
            operation = {
                "operationId": f"{endpoint.__name__}_{method.lower()}",
                "summary": summary,
                "description": doc + ("" if public else f"\n\nRoles: {', '.join(roles)}."),
                "parameters": parameters,
                "responses": {"200": {"description": "OK"},
                              "400": {"description": "Bad input: {\"error\": \"one line\"}"},
                              "404": {"description": "No such item (an id out of range too)"}},
            }
            if not public:
                operation["security"] = [{"session": []}]
                operation["responses"].update({"401": {"description": "Not logged in"},
                                               "403": {"description": "Role not allowed, or missing CSRF token"}})
                operation["x-roles"] = list(roles)
            if method not in ("GET", "HEAD"):
                operation["responses"]["413"] = {"description": "Body over dashboard.max_body_bytes "
                                                                "(multipart: max_upload_bytes)"}
                operation["parameters"] = parameters + [
                    {"name": "X-CSRF-Token", "in": "header", "required": True, "schema": {"type": "string"},
                     "description": "The session's CSRF token (GET /api/me, or the login answer)"}]
            paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Rollcall dashboard API", "version": "1.0",
                 "description": "Log in with POST /login (JSON {username, password}); the session is a signed "
                                "cookie; state-changing requests carry the X-CSRF-Token header. Errors are "
                                "{\"error\": message}. Live events: GET /api/events/stream (text/event-stream)."},
        "components": {"securitySchemes": {"session": {"type": "apiKey", "in": "cookie", "name": "rollcall_session"}}},
        "paths": paths,
    }
