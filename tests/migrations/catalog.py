"""A database's schema as comparable facts read from PostgreSQL's catalog."""

from __future__ import annotations

from typing import Any

from sqlalchemy import URL

from tests.migrations.original import fetch

_ENUMS = """
    SELECT t.typname AS name, array_agg(e.enumlabel ORDER BY e.enumsortorder) AS labels
    FROM pg_type t
    JOIN pg_enum e ON e.enumtypid = t.oid
    WHERE t.typnamespace = 'public'::regnamespace
    GROUP BY t.typname
"""
# Position included: tables built by different paths must match column for column.
_COLUMNS = """
    SELECT c.relname AS table, a.attnum AS position, a.attname AS name,
           format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null,
           pg_get_expr(d.adbin, d.adrelid) AS default
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
      AND a.attnum > 0 AND NOT a.attisdropped
"""
# The definition names the index method (USING hash / btree), columns and predicate.
_INDEXES = """
    SELECT c.relname AS name, pg_get_indexdef(i.indexrelid) AS definition
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
    WHERE c.relnamespace = 'public'::regnamespace
"""
_CONSTRAINTS = """
    SELECT conrelid::regclass::text AS table, conname AS name, contype::text AS kind,
           pg_get_constraintdef(oid) AS definition
    FROM pg_constraint
    WHERE connamespace = 'public'::regnamespace
"""
_OTHER_RELATIONS = """
    SELECT relname AS name, relkind::text AS kind FROM pg_class
    WHERE relnamespace = 'public'::regnamespace AND relkind NOT IN ('r', 'i')
"""


def _rows(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted(tuple(row.values()) for row in rows)


async def catalog_facts(url: URL) -> dict[str, list[tuple[Any, ...]]]:
    """Enums (labels in order), columns, indexes, constraints and any other relation."""
    return {
        "enums": _rows(await fetch(url, _ENUMS)),
        "columns": _rows(await fetch(url, _COLUMNS)),
        "indexes": _rows(await fetch(url, _INDEXES)),
        "constraints": _rows(await fetch(url, _CONSTRAINTS)),
        "other relations": _rows(await fetch(url, _OTHER_RELATIONS)),
    }
