"""String fields that are safe to hash and to store: valid Unicode, no NUL bytes.

JSON may carry lone surrogates ("\\ud800") that cannot be encoded as UTF-8, and
PostgreSQL text cannot hold NUL; both are refused with 422 at the edge.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def _encodable(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


def _storable(value: str) -> str:
    _encodable(value)
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


StorableStr = Annotated[str, AfterValidator(_storable)]
"""Text that goes into the database."""

EncodableStr = Annotated[str, AfterValidator(_encodable)]
"""Text that is only hashed (passwords, tokens): NUL is fine, surrogates are not."""
