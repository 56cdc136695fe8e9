"""A bounded repr for error messages: whatever a user wrote, the message that quotes it stays short.

A YAML alias bomb (nine levels of anchors) is a small file whose value is billions of elements when printed in
full; `repr` on it hangs. reprlib stops at a depth and a width, so formatting costs O(limit), not O(value).
"""
from __future__ import annotations

import reprlib

_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxdict = 6
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlong = 40


def short(value, limit: int = 120) -> str:
    """`repr(value)`, cut to `limit` characters (with '...') and never walking more of it than that needs."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
