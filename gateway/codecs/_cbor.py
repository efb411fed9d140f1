"""A structural pre-scan of a CBOR payload, run before any object is built from it.

cbor2 turns semantic tags into Python objects while decoding — tag 35 compiles a regular
expression, tag 36 runs the MIME parser, tags 28/29 share values, 258 builds sets — and
its ``tag_hook`` only sees a tag *after* the tagged item has been decoded. SenML needs
none of that, so :func:`scan` walks the item headers (no values are built) and refuses
a payload that holds anything SenML does not need, naming what and where:

* tags other than 2/3 (bignums), 4 (decimal fraction) and 55799 (self-described CBOR);
* a bignum longer than ``max_bignum_bytes`` (128 bytes = 1024 bits: anything larger
  cannot be a finite float, and converting it would only cost time);
* nesting deeper than ``max_depth`` (a SenML pack needs 3: array, map, decimal);
* truncated items, reserved header values, stray ``break`` codes, malformed
  indefinite-length strings.

It returns where the first item ends, so the caller can refuse trailing bytes. The cost
is one pass over the item headers (strings are skipped by length).
"""

from __future__ import annotations

from gateway.errors import DecodeError

ALLOWED_TAGS = frozenset({2, 3, 4, 55799})
MAX_DEPTH = 16
MAX_BIGNUM_BYTES = 128

_INDEFINITE = -1
_BREAK = 0xFF


def _fail(what: str, offset: int) -> DecodeError:
    return DecodeError(f"invalid SenML CBOR: {what} at byte {offset}")


def _skip_table() -> tuple[int, ...]:
    """Per initial byte, the whole size of an item that byte alone determines (integers,
    simple values, floats, strings under 24 bytes); -1 for everything else."""
    table = []
    for initial in range(256):
        major, info = initial >> 5, initial & 0x1F
        if major in (0, 1, 7) and info < 28:
            table.append(1 + (0 if info < 24 else 1 << (info - 24)))
        elif major in (2, 3) and info < 24:
            table.append(1 + info)
        else:
            table.append(-1)
    return tuple(table)


_SKIP = _skip_table()


def scan(data: bytes, max_depth: int = MAX_DEPTH, max_bignum_bytes: int = MAX_BIGNUM_BYTES) -> int:
    """Check the first CBOR item of ``data`` and return the offset just after it.

    Raises :class:`DecodeError` naming the first problem and its byte offset.
    """
    n = len(data)
    try:
        end = _walk(data, n, max_depth, max_bignum_bytes)
    except IndexError:  # read past the end: the hot loop leaves bounds checks to this
        raise _fail("truncated", n) from None
    if end > n:
        raise _fail("truncated", n)
    return end


def _walk(data: bytes, n: int, max_depth: int, max_bignum_bytes: int) -> int:
    pos = 0
    skip_table = _SKIP
    open_items: list[int] = []
    """Per open array/map, the items still to come (_INDEFINITE: until a break)."""
    tag = -1
    """The tag whose item comes next (-1: none)."""
    while True:
        skip = skip_table[data[pos]]  # IndexError past the end
        if skip > 0 and tag == -1:  # the common case: a number or a short string
            pos += skip  # an overshoot shows at the next read or at the end
        else:
            start = pos
            initial = data[pos]
            pos += 1
            major = initial >> 5
            info = initial & 0x1F
            if info < 24:
                arg = info
            elif info < 28:
                size = 1 << (info - 24)
                if pos + size > n:
                    raise _fail("truncated", start)
                arg = int.from_bytes(data[pos : pos + size], "big")
                pos += size
            elif info == 31:
                arg = _INDEFINITE
            else:
                raise _fail(f"reserved header value {info}", start)

            if initial == _BREAK:
                if tag != -1 or not open_items or open_items[-1] != _INDEFINITE:
                    raise _fail("unexpected break", start)
                open_items.pop()
            elif arg == _INDEFINITE and major not in (2, 3, 4, 5):
                raise _fail("indefinite length on a non-container", start)
            else:
                if tag != -1:
                    _check_tagged(tag, major, arg, start, max_bignum_bytes)
                    tag = -1
                if major == 6:
                    if arg not in ALLOWED_TAGS:
                        raise DecodeError(
                            f"invalid SenML CBOR: tag {arg} at byte {start} is not allowed"
                            " (SenML uses only tags 2, 3, 4 and 55799)"
                        )
                    tag = arg
                    continue  # the tagged item follows; together they are one item
                if major in (2, 3):
                    pos = _skip_string(data, pos, major, arg, start)
                elif major in (4, 5):
                    if len(open_items) >= max_depth:
                        raise _fail(f"nesting deeper than {max_depth}", start)
                    if arg == _INDEFINITE:
                        open_items.append(_INDEFINITE)
                        continue
                    count = arg * 2 if major == 5 else arg
                    if count > n - pos:  # every item takes at least one byte
                        raise _fail(f"{arg} items announced, fewer bytes left", start)
                    if count:
                        open_items.append(count)
                        continue
                # majors 0, 1 and 7 (integers, simple values, floats) are complete as read

        # One item is complete: count it against the containers it closes.
        while open_items:
            left = open_items[-1]
            if left > 1:
                open_items[-1] = left - 1
                break
            if left == _INDEFINITE:
                break
            open_items.pop()
        else:
            return pos


def _check_tagged(tag: int, major: int, arg: int, start: int, max_bignum_bytes: int) -> None:
    if tag in (2, 3):
        if major != 2 or arg == _INDEFINITE:
            raise _fail(f"tag {tag} (bignum) must hold a byte string", start)
        if arg > max_bignum_bytes:
            raise DecodeError(
                f"invalid SenML CBOR: integer of {arg} bytes at byte {start}"
                f" (at most {max_bignum_bytes})"
            )
    elif tag == 4 and (major != 4 or arg != 2):
        raise _fail("tag 4 (decimal fraction) must hold [exponent, mantissa]", start)


def _skip_string(data: bytes, pos: int, major: int, arg: int, start: int) -> int:
    n = len(data)
    if arg != _INDEFINITE:
        if arg > n - pos:
            raise _fail("truncated string", start)
        return pos + arg
    while True:  # indefinite: definite chunks of the same major type, then a break
        if pos >= n:
            raise _fail("truncated string", start)
        initial = data[pos]
        if initial == _BREAK:
            return pos + 1
        info = initial & 0x1F
        if initial >> 5 != major or info >= 28:
            raise _fail("bad chunk in an indefinite-length string", pos)
        pos += 1
        if info < 24:
            length = info
        else:
            size = 1 << (info - 24)
            if pos + size > n:
                raise _fail("truncated string", start)
            length = int.from_bytes(data[pos : pos + size], "big")
            pos += size
        if length > n - pos:
            raise _fail("truncated string", start)
        pos += length
