"""/docs and /redoc are served whole by the service: their pages name no other host."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from app.main import create_app
from tests.conftest import make_settings

# Any absolute or protocol-relative URL in an attribute or a script.
EXTERNAL = re.compile(r"""(?:https?:)?//[A-Za-z0-9.-]+""")
ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")


@pytest.fixture
async def docs_client() -> AsyncIterator[httpx.AsyncClient]:
    # The pages and their assets need no database: no lifespan runs.
    app = create_app(make_settings())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://task-manager") as client:
        yield client


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_docs_pages_reference_no_external_url(
    docs_client: httpx.AsyncClient, page: str
) -> None:
    response = await docs_client.get(page)

    assert response.status_code == 200
    # The browser refuses whatever a bundle would still fetch from elsewhere.
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert EXTERNAL.findall(response.text) == []
    assets = ASSET.findall(response.text)
    assert assets, "the page loads no asset"
    for asset in assets:
        assert asset.startswith("/"), asset
        assert (await docs_client.get(asset)).status_code == 200, asset


async def test_the_docs_page_points_at_our_openapi_document(
    docs_client: httpx.AsyncClient,
) -> None:
    assert "/openapi.json" in (await docs_client.get("/docs")).text
