"""The life cycle of a task, as callers see it (see docs/legacy-api.md).

The one place the statuses and their groupings are written down: the models, the queue's
SQL (as bind parameters), the history readers and the API all take them from here.
"""

from enum import StrEnum


class TaskStatus(StrEnum):
    CREATED = "created"
    STARTED = "started"
    PREPROCESSING = "preprocessing"
    TRANSCRIBING = "transcribing"
    EVALUATING = "evaluating"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED})

# The same set in declaration order, for SQL.
TERMINAL_VALUES = [status.value for status in TaskStatus if status in TERMINAL_STATUSES]

# The set as an SQL literal, `('completed', 'failed')`. Statements that filter unfinished
# tasks write it in rather than binding it: the partial indexes on unfinished tasks carry
# this literal as their predicate, and a bound array would let PostgreSQL's generic plan
# (which prepared statements switch to after a few runs) miss them and read every finished
# task of a user on each claim.
TERMINAL_SQL = "(" + ", ".join(f"'{value}'" for value in TERMINAL_VALUES) + ")"


def is_terminal(status: str) -> bool:
    """For a status read back from the database as a plain string."""
    return status in TERMINAL_STATUSES


# The status a task is in while it waits on each audio service, and that service's name.
STAGE_BY_STATUS = {
    TaskStatus.PREPROCESSING.value: "preprocessing",
    TaskStatus.TRANSCRIBING.value: "transcribing",
    TaskStatus.EVALUATING.value: "feedback",
}
