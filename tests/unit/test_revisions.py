"""The head read from the migration scripts' source is Alembic's, and any script it
cannot read plainly makes it answer None (start-up then runs Alembic)."""

from __future__ import annotations

from pathlib import Path

from alembic.script import ScriptDirectory

from app.db.migrations import alembic_config, head_revision
from app.db.revisions import repository_head


def test_the_plain_reading_agrees_with_alembic() -> None:
    alembics = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert alembics is not None
    assert repository_head() == alembics == head_revision()


def _script(folder: Path, revision: str, down: str, extra: str = "") -> None:
    (folder / f"{revision}_x.py").write_text(
        f"revision: str = {revision!r}\ndown_revision: str | None = {down}\n"
        f"branch_labels = None\ndepends_on = None\n{extra}"
    )


def test_a_linear_chain_has_its_last_revision_as_head(tmp_path: Path) -> None:
    _script(tmp_path, "a1", "None")
    _script(tmp_path, "b2", "'a1'")
    _script(tmp_path, "c3", "'b2'")
    (tmp_path / "__init__.py").write_text("revision = 'ignored'\n")
    (tmp_path / "notes.txt").write_text("revision = 'ignored'\n")
    assert repository_head(tmp_path) == "c3"


def test_a_merge_revision_is_the_one_head(tmp_path: Path) -> None:
    _script(tmp_path, "a1", "None")
    _script(tmp_path, "b2", "'a1'")
    _script(tmp_path, "b3", "'a1'")
    _script(tmp_path, "m4", "('b2', 'b3')")
    assert repository_head(tmp_path) == "m4"


def test_what_only_alembic_can_judge_answers_none(tmp_path: Path) -> None:
    _script(tmp_path, "a1", "None")
    _script(tmp_path, "b2", "'a1'")
    _script(tmp_path, "b3", "'a1'")
    assert repository_head(tmp_path) is None  # two heads

    (tmp_path / "b3_x.py").unlink()
    _script(tmp_path, "c4", "'missing'")
    assert repository_head(tmp_path) is None  # revises a script that is not there

    (tmp_path / "c4_x.py").unlink()
    _script(tmp_path, "c5", "compute()")
    assert repository_head(tmp_path) is None  # not a literal

    (tmp_path / "c5_x.py").unlink()
    _script(tmp_path, "c6", "'b2'", extra="branch_labels = ('feature',)\n")
    assert repository_head(tmp_path) is None  # a later assignment wins, as in Python

    (tmp_path / "c6_x.py").unlink()
    (tmp_path / "c7_x.py").write_text("down_revision = 'b2'\n")
    assert repository_head(tmp_path) is None  # no revision id in the script
