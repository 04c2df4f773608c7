"""Caps on an upload form's parts, and the memory one form can hold while it is parsed."""

from __future__ import annotations

from typing import TypedDict

from starlette.formparsers import MultiPartParser

from app.api.upload.form_parser import PartCaps


class FormLimits(TypedDict, total=False):
    """The limits `Request.form()` and FastAPI's `form_limits` take."""

    max_files: int
    max_fields: int
    max_part_size: int


# The form has one file and three text fields (title, text_id, and user_id on the legacy
# route); a few more are tolerated for clients that send extras. A title is 50
# characters, so a text field has no reason to be larger than a few KiB.
MAX_TEXT_FIELDS = 8
MAX_TEXT_FIELD_BYTES = 8 * 1024
UPLOAD_FORM_LIMITS = FormLimits(
    max_files=1, max_fields=MAX_TEXT_FIELDS, max_part_size=MAX_TEXT_FIELD_BYTES
)
# The same caps for the parser that reads a form into memory.
UPLOAD_PART_CAPS = PartCaps(
    max_files=UPLOAD_FORM_LIMITS["max_files"],
    max_fields=UPLOAD_FORM_LIMITS["max_fields"],
    max_text_bytes=UPLOAD_FORM_LIMITS["max_part_size"],
)
# Memory a form can hold while it is parsed by Starlette: the in-memory part of its
# spooled file plus its text fields at their caps.
PARSE_MEMORY_BYTES = MultiPartParser.spool_max_size + MAX_TEXT_FIELDS * MAX_TEXT_FIELD_BYTES
