"""Reading a versioned file: its `format` first, so an unknown one is named rather than mis-decoded."""

from __future__ import annotations

from typing import TypeVar

import msgspec
from msgspec import Struct

from recdistill.core.errors import DataError

T = TypeVar("T")


class _Format(Struct):
    format: int = 1  # a file written before the field existed is format 1


def decode_versioned(data: bytes, kind: type[T], known: int, what: str, upgrade: str, msgpack: bool = False) -> T:
    """`data` (JSON, or msgpack) as `kind`. `DataError` for a format other than `known` (naming `what` and
    what to do: `upgrade`) or for content that is not `what`."""
    codec = msgspec.msgpack if msgpack else msgspec.json
    try:
        found = codec.decode(data, type=_Format).format
        if found != known:
            raise DataError(f"{what} format {found} is not supported: this version knows format {known}; {upgrade}")
        return codec.decode(data, type=kind)
    except msgspec.DecodeError as exc:
        raise DataError(f"{what} is unreadable ({exc})") from None
