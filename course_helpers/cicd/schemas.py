"""Validate YAML text against a schema that ``check-jsonschema`` ships, in this process.

``check-jsonschema FILE`` as a subprocess costs about 5 s a call here, nearly all of it
``jsonschema`` importing the optional ``rfc3987_syntax`` (it builds a grammar at import).
Graders validate a student's workflow or compose file several times per submission, so this
module loads the same vendored schemas (``vendor.github-workflows``, ``vendor.compose-spec``,
``vendor.gitlab-ci``...) and validates in-process with YAML 1.2 semantics (``on:`` stays a
string, as GitHub reads it), without that optional import: IRI formats are then not
checked, every structural rule still is. Offline, well under a second.
"""

from __future__ import annotations

import sys
from typing import Any

from ..errors import CourseError

WORKFLOW = "vendor.github-workflows"
COMPOSE = "vendor.compose-spec"


def _validator(schema_name: str):
    sys.modules.setdefault("rfc3987_syntax", None)  # optional; 5 s to import (see above)
    import jsonschema
    from check_jsonschema.builtin_schemas import NoSuchSchemaError, get_builtin_schema

    try:
        schema = get_builtin_schema(schema_name)
    except NoSuchSchemaError:
        raise CourseError(f"check-jsonschema has no schema named {schema_name!r}: use one of "
                          f"its --builtin-schema names, e.g. {WORKFLOW} or {COMPOSE}") from None
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def load_yaml(text: str) -> Any:
    """YAML 1.2 (``on``/``yes`` stay strings), as GitHub and Docker read it."""
    from ruamel.yaml import YAML

    return YAML(typ="safe", pure=True).load(text)


def validate_text(text: str, schema_name: str = WORKFLOW) -> tuple[bool, str]:
    """(ok, message) for YAML ``text`` against a check-jsonschema built-in schema.

    The message is "ok", or one line per error: the path in the document and what is wrong.
    """
    try:
        doc = load_yaml(text)
    except Exception as err:  # noqa: BLE001 - every YAML error is the same to a student
        return False, f"not valid YAML: {str(err).splitlines()[0] if str(err) else err}"
    if doc is None:
        return False, "the document is empty"
    errors = sorted(_validator(schema_name).iter_errors(doc), key=lambda e: list(map(str, e.path)))
    if not errors:
        return True, "ok"
    lines = []
    for err in errors[:10]:
        where = "/".join(map(str, err.path)) or "(top level)"
        message = err.message if len(err.message) <= 200 else err.message[:199] + "…"
        lines.append(f"{where}: {message}")
    return False, "\n".join(lines)
