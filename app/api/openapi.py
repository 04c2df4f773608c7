"""Small corrections to the generated OpenAPI document so it says what the API accepts,
and the pages that render it (/docs, /redoc) served without a CDN."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """`anyOf: [X, null]` → `X`: an absent query or header parameter is "no value";
    the literal text `null` is not a value any of them accepts."""
    options = schema.get("anyOf")
    if not isinstance(options, list):
        return schema
    kept = [option for option in options if option.get("type") != "null"]
    if len(kept) != 1 or len(kept) == len(options):
        return schema
    rest = {key: value for key, value in schema.items() if key != "anyOf"}
    return {**kept[0], **rest}


def tidy_openapi(document: dict[str, Any]) -> dict[str, Any]:
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if "schema" in parameter:
                    parameter["schema"] = _without_null(parameter["schema"])
    return document


def install_openapi(app: FastAPI) -> None:
    """Generate the document once, tidied."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = tidy_openapi(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                    license_info=app.license_info,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# Swagger UI's and ReDoc's bundles as the fastapi-offline package ships them.
DOCS_ASSETS_URL = "/static-offline-docs"
_DOCS_ASSETS_DIR = files("fastapi_offline") / "static"
# The browser itself refuses anything from another origin: ReDoc's bundle loads its
# vendor's logo from a CDN, and a page on a host without internet must not try.
# Both UIs run an inline start-up script and inject styles; ReDoc searches in a blob worker.
DOCS_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; "
    "connect-src 'self'; frame-ancestors 'self'"
)


def _docs_page(html: HTMLResponse) -> HTMLResponse:
    html.headers["Content-Security-Policy"] = DOCS_CONTENT_SECURITY_POLICY
    return html


def install_docs(app: FastAPI, *, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """/docs (Swagger UI) and /redoc (ReDoc), with their assets served by this service."""
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=str(_DOCS_ASSETS_DIR)), name="docs-assets")
    oauth2_redirect_url = f"{docs_url}/oauth2-redirect"

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _docs_page(
            get_swagger_ui_html(
                openapi_url=f"{root}{app.openapi_url}",
                title=f"{app.title} - Swagger UI",
                oauth2_redirect_url=f"{root}{oauth2_redirect_url}",
                swagger_js_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
                swagger_css_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui.css",
                swagger_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
                swagger_ui_parameters=app.swagger_ui_parameters,
            )
        )

    @app.get(oauth2_redirect_url, include_in_schema=False)
    async def swagger_ui_oauth2_redirect() -> HTMLResponse:
        return _docs_page(get_swagger_ui_oauth2_redirect_html())

    @app.get(redoc_url, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _docs_page(
            get_redoc_html(
                openapi_url=f"{root}{app.openapi_url}",
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{root}{DOCS_ASSETS_URL}/redoc.standalone.js",
                redoc_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
                with_google_fonts=False,
            )
        )
