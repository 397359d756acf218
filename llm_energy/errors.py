"""User-facing errors.

Anything a user can cause (a bad file, field or value) raises :class:`UserError`. The CLI prints its
message as one line and exits non-zero; it never shows a traceback for one.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input, reported as one clear line.

    Build the message with :func:`bad_value` where a file/field/value is involved, so every message
    names what was wrong and where.
    """


def bad_value(what: str, value: object, why: str, *, source: str | None = None) -> UserError:
    """A ``UserError`` naming the input (``source``: a file or flag), the field and the value."""
    where = f"{source}: " if source else ""
    return UserError(f"{where}{what}={value!r}: {why}")
