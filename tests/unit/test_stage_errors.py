"""What a learner reads of a failed stage call, and what stays for operators."""

from __future__ import annotations

import httpx

from app.pipeline.errors import failure_from_response, failure_from_transport

REQUEST = httpx.Request("POST", "http://transcriber-7.cluster.internal:8066/")


def test_a_connection_error_names_the_fault_not_the_host() -> None:
    error = httpx.ConnectError(
        "[Errno -2] Name or service not known: transcriber-7.cluster.internal", request=REQUEST
    )

    failure = failure_from_transport(error, timeout=300)

    assert failure.transient
    assert failure.user_message == "the service could not be reached"
    assert "transcriber-7.cluster.internal" in failure.reason  # kept for the logs


def test_a_timeout_says_it_timed_out() -> None:
    failure = failure_from_transport(httpx.ReadTimeout("read timed out", request=REQUEST), 300)

    assert failure.user_message == "the service timed out (no answer within 300s)"
    assert "ReadTimeout" in failure.reason


def test_a_proxy_error_page_is_not_quoted_to_the_learner() -> None:
    page = "<html><body>502 Bad Gateway: upstream 10.0.3.7:8066 (transcriber-7)</body></html>"
    response = httpx.Response(502, text=page, request=REQUEST)

    failure = failure_from_response(response)

    assert failure.transient
    assert failure.user_message == "the service answered HTTP 502"
    assert "10.0.3.7" in failure.reason


def test_the_services_own_detail_reaches_the_learner() -> None:
    response = httpx.Response(404, json={"detail": "Text not found."}, request=REQUEST)

    failure = failure_from_response(response)

    assert not failure.transient
    assert failure.user_message == "the service answered HTTP 404: Text not found."


def test_a_validation_report_stays_in_the_logs() -> None:
    report = {"detail": [{"loc": ["body", "file"], "msg": "Field required", "input": None}]}
    response = httpx.Response(422, json=report, request=REQUEST)

    failure = failure_from_response(response)

    assert failure.user_message == "the service answered HTTP 422"
    assert "Field required" in failure.reason
