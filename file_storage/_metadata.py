"""User metadata: the rules every backend applies, and its RFC 2047 form on S3.

S3 sends metadata as HTTP headers (``x-amz-meta-<name>: <value>``). A name must be an
HTTP token (RFC 9110, section 5.6.2); S3 lower-cases it. A value is any ``str``: one that
would not survive a header unchanged (non-ASCII, control characters, leading or trailing
whitespace, or text that itself looks like an encoded-word) travels as RFC 2047
encoded-words (``=?UTF-8?B?...?=``) and is decoded on the way back, also when another
tool stored it so. S3 limits names plus values to 2 KiB, counted on what it receives:
the encoded form. Every backend applies the same limit, so metadata that works on memory
works on S3. At most 50 names: each is a header of the store's answers, which HTTP clients
cap at 100.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from collections.abc import Mapping

from file_storage.errors import InvalidMetadataError, _elided_repr

__all__ = [
    "MAX_HEADER_VALUE_BYTES",
    "MAX_METADATA_BYTES",
    "MAX_METADATA_NAMES",
    "check_content_type",
    "decode_value",
    "encode_value",
    "normalize_metadata",
]

# "Within the PUT request header, the user-defined metadata is limited to 2 KB in size",
# the sum of the UTF-8 bytes of each key and value (AWS, "Working with object metadata")
MAX_METADATA_BYTES = 2048
# each name is one response header: object_store's hyper and Python's http.client refuse
# an answer of more than 100 headers, and a store sends up to about 35 of its own (Azure,
# after a copy), so more names than this would be written but could never be read back
MAX_METADATA_NAMES = 50
# an object header (content type, cache control, content disposition) is one line of the
# store's answers: aiohttp refuses a line over 8 KiB, and S3 takes at most 8 KB of request
# headers, so a longer value could be stored and never read back; 2 KiB, like metadata
MAX_HEADER_VALUE_BYTES = 2048

# tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|"
#       / "~" / DIGIT / ALPHA  (RFC 9110, section 5.6.2)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# printable ASCII, not starting or ending with a space, never "=?": sent as it is
_PLAIN = re.compile(r"(?:[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)?")
# an encoded-word (RFC 2047, section 2; RFC 2231 adds "*language" after the charset)
_WORD = r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([BbQq])\?([^?\s]*)\?="
_WORD_RE = re.compile(_WORD)
# a run of encoded-words separated by whitespace, itself delimited by whitespace or the
# ends of the value: "a=?...?=b" is not an encoded-word, and stays as it is
_RUN = re.compile(rf"(?<!\S){_WORD}(?:\s+{_WORD})*(?!\S)")
# base64 of 45 bytes is 60 characters: each word stays within RFC 2047's 75
_WORD_BYTES = 45
# a name shown in an error message is cut to this many characters
_SHOWN_CHARS = 64


def normalize_metadata(
    metadata: Mapping[str, str] | None, operation: str = "", key: str | None = None
) -> dict[str, str]:
    """Check ``metadata`` and return it with lower-cased names.

    Raises:
        TypeError: a name or value is not a ``str``.
        InvalidMetadataError: a name is not an HTTP token, two names differ only in case,
            a value is not valid Unicode text, there are more than 50 names, or the whole
            is over 2 KiB as S3 counts it.
    """
    if not metadata:
        return {}
    if len(metadata) > MAX_METADATA_NAMES:
        raise InvalidMetadataError(
            f"metadata has {len(metadata)} names, over the limit of {MAX_METADATA_NAMES} "
            "(each travels as an HTTP header)",
            operation=operation,
            key=key,
        )
    out: dict[str, str] = {}
    size = 0
    for name, value in metadata.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError("metadata must map str to str")

        def invalid(detail: str) -> InvalidMetadataError:
            return InvalidMetadataError(f"metadata {detail}", operation=operation, key=key)

        if not _TOKEN.fullmatch(name):
            raise invalid(
                f"name {_shown(name)} is not an HTTP token: use ASCII letters, digits and "
                "!#$%&'*+-.^_`|~"
            )
        lower = name.lower()
        if lower in out:
            raise invalid(f"name {_shown(name)} is given twice (names are not case-sensitive)")
        size += len(lower)
        if size + len(value) > MAX_METADATA_BYTES:
            # each character is at least one byte as sent: a value too long as it is is
            # refused unencoded (RFC 2047 of megabytes takes seconds and many times the
            # value's size in memory)
            raise invalid(
                f"is over {MAX_METADATA_BYTES} bytes as sent to S3, its limit "
                f"(names plus values; the value of {_shown(name)} alone has "
                f"{len(value)} characters)"
            )
        try:
            size += len(encode_value(value))
        except UnicodeEncodeError:
            raise invalid(f"value of {_shown(name)} is not valid Unicode text") from None
        out[lower] = value if type(value) is str else str.__str__(value)  # an enum member
    if size > MAX_METADATA_BYTES:
        raise invalid(
            f"is {size} bytes as sent to S3, over its limit of {MAX_METADATA_BYTES} "
            "(names plus values; non-ASCII values count RFC 2047 encoded)"
        )
    return out


def _shown(name: str) -> str:
    """``repr(name)``, its middle left out when long."""
    return _elided_repr(name, _SHOWN_CHARS, _SHOWN_CHARS // 2)


def check_content_type(content_type: str, operation: str = "", key: str | None = None) -> str:
    """Return ``content_type`` when it can travel as an HTTP header value as it is.

    S3 stores it as the ``Content-Type`` header and ``storage_response`` sends it back:
    a CR or LF would split that response (or fail it), so it is refused before any I/O.

    Raises:
        TypeError: not a ``str``.
        InvalidMetadataError: not printable ASCII, blank at either end, or over 2 KiB.
    """
    if not isinstance(content_type, str):
        raise TypeError("content_type must be a str")
    if (
        not _PLAIN.fullmatch(content_type)
        or not content_type
        or len(content_type) > MAX_HEADER_VALUE_BYTES
    ):
        raise InvalidMetadataError(
            "content type is not a header value: use printable ASCII, no line breaks, "
            f"nothing blank at either end, at most {MAX_HEADER_VALUE_BYTES} characters",
            operation=operation,
            key=key,
        )
    # a str subclass (an enum member) reached S3 as its str(): "Type.CSV", not its text
    return content_type if type(content_type) is str else str.__str__(content_type)


def encode_value(value: str) -> str:
    """The header-safe form of ``value``: itself when plain ASCII, else RFC 2047 words."""
    if _PLAIN.fullmatch(value) and "=?" not in value:
        return value
    words: list[bytes] = []
    word = bytearray()
    for char in value:  # a word holds whole characters only (RFC 2047, section 5)
        data = char.encode("utf-8")
        if len(word) + len(data) > _WORD_BYTES:
            words.append(bytes(word))
            word.clear()
        word += data
    words.append(bytes(word))
    # adjacent encoded-words are joined without the space between them when decoded
    return " ".join(f"=?UTF-8?B?{base64.b64encode(w).decode('ascii')}?=" for w in words)


def decode_value(value: str) -> str:
    """Decode the RFC 2047 encoded-words in a header value; malformed ones stay as they are."""
    if "=?" not in value:
        return value
    return _RUN.sub(_decode_run, value)


def _decode_run(match: re.Match[str]) -> str:
    text = match.group(0)
    pieces: list[tuple[str, bytes]] = []
    try:
        for charset, encoding, payload in _WORD_RE.findall(text):
            if encoding in "Bb":
                data = base64.b64decode(payload, validate=True)
            else:
                data = binascii.a2b_qp(payload, header=True)  # "_" is a space in Q
            name = codecs.lookup(charset).name
            if pieces and pieces[-1][0] == name:  # a character may span two words
                pieces[-1] = (name, pieces[-1][1] + data)
            else:
                pieces.append((name, data))
        return "".join(data.decode(name) for name, data in pieces)
    except (binascii.Error, LookupError, UnicodeDecodeError):
        return text
