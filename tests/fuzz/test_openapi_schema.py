"""Schemathesis against the app's own OpenAPI schema: no 5xx, responses as documented."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Ok
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import positive_data_acceptance
from sqlalchemy import URL

from app.main import create_app
from tests.conftest import make_settings

# Enough to explore every route's parameters without making CI slow.
EXAMPLES_PER_OPERATION = 40
# Every default check runs (no 5xx, status codes, content types, headers and bodies as
# documented, invalid input refused) except "schema-valid input is accepted": some rules
# live outside the schema on purpose (an opaque pagination cursor, a title that is not
# blank), and refusing those with a documented 4xx is the behaviour we want.


@pytest.fixture(scope="module")
def api_schema(database_url: URL) -> Iterator[schemathesis.BaseSchema]:
    app = create_app(make_settings(max_upload_mb=1), database_url=database_url)
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    # Schemathesis keeps the app's lifespan running for the process; end it with the module.
    asgi.shutdown_lifespans()


def test_every_route_answers_as_documented(api_schema: schemathesis.BaseSchema) -> None:
    operations = []
    for result in api_schema.get_all_operations():
        assert isinstance(result, Ok), f"the schema has an invalid operation: {result}"
        operations.append(result.ok())
    assert len(operations) >= 12
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def fuzz(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(excluded_checks=[positive_data_acceptance])

        fuzz()
