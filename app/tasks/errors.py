"""Domain errors of the task service; one handler in `app.api.errors` renders them."""


class TaskError(Exception):
    """Base of errors a caller can act on; `status_code` and `detail` shape the response."""

    status_code = 400
    detail = "Bad request."
    headers: dict[str, str] | None = None

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or self.detail)
        if detail is not None:
            self.detail = detail


class TaskNotFound(TaskError):
    # Another user's task answers exactly like a missing one, so ids leak nothing.
    status_code = 404
    detail = "Task not found."


class IdempotencyConflict(TaskError):
    status_code = 409
    detail = (
        "This Idempotency-Key was already used for a different request; "
        "use a new key for a new upload."
    )


class InvalidCursor(TaskError):
    status_code = 400
    detail = "The cursor is not valid; pass the next_cursor of a previous page."


class QuotaExceeded(TaskError):
    # 429, not 413: the request is fine, the user holds too much right now, and finishing
    # tasks and the audio retention free it; Retry-After says when to try again.
    status_code = 429

    def __init__(self, detail: str, *, retry_after_seconds: int) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(retry_after_seconds)}
