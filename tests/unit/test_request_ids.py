"""Fresh request ids: the shape the logs and clients know, unique, and per process."""

from __future__ import annotations

import os
import re

from app.api.request_observer import REQUEST_IDS, RequestIds


def test_ids_are_32_hex_digits_and_never_repeat() -> None:
    ids = RequestIds()
    drawn = [ids.next() for _ in range(10_000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", value) for value in drawn)
    assert len(set(drawn)) == len(drawn)


def test_each_generator_draws_its_own_prefix() -> None:
    assert RequestIds().next()[:16] != RequestIds().next()[:16]


def test_a_forked_child_does_not_continue_its_parents_ids() -> None:
    parent = REQUEST_IDS.next()
    read_end, write_end = os.pipe()
    child_pid = os.fork()
    if child_pid == 0:  # pragma: no cover - the child
        os.write(write_end, REQUEST_IDS.next().encode())
        os._exit(0)
    os.close(write_end)
    child = os.read(read_end, 64).decode()
    os.close(read_end)
    os.waitpid(child_pid, 0)
    assert re.fullmatch(r"[0-9a-f]{32}", child)
    assert child[:16] != parent[:16]
