"""The ordered list of router factories that make up the HTTP API."""

from __future__ import annotations

from expertline.web.app import RouterFactory


def default_factories() -> list[RouterFactory]:
    from expertline.config import http as config_http
    from expertline.reporting import http as reporting_http
    from expertline.runtime import http as runtime_http
    from expertline.web import assets, console, ops, signin
    from expertline.web.admin import config_pages, dashboard, history

    # The routing-client API first: its hot paths are matched before the 34 admin routes.
    return [
        ops.router,
        runtime_http.router,
        config_http.router,
        reporting_http.router,
        signin.router,
        assets.router,
        dashboard.router,
        config_pages.router,
        history.router,
        console.router,
    ]
