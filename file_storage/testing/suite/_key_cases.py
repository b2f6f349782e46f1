"""The one table of valid and invalid keys every backend runs (see docs/concepts.md, "Keys")."""

from __future__ import annotations

VALID_KEYS = [
    "a",
    "file.txt",
    "users/u1/sessions/s-1/step-0001/screenshot.png",
    "with space/and [brackets] (parens) {braces}.txt",
    "unicode/\u00fcber caf\u00e9 \u65e5\u672c\u8a9e.txt",
    "emoji/\U0001f600 face.png",
    "rtl/\u05e9\u05dc\u05d5\u05dd.txt",
    "combining/e\u0301.txt",
    "dots/.hidden",
    "dots/a..b",
    "punct/a+b=c&d;e,f@g#h%i!j~k'l$m^.txt",
    "quotes/\"double\" and 'single'.txt",
    "percent/%2F%2e%2E.txt",
    "colon/a:b*c?<d>|e.txt",
    "x" * 255,
    "/".join(["seg"] * 200) + "/end",
]

# keys that spell one another in some reading (a trailing dot or space as Windows drops
# them, an invisible or fullwidth letter, percent-encoding): each is its own object on
# every backend, or one tenant's write would replace another's. Not here: keys that
# differ only in case or Unicode normalization, one file on a local root on macOS's
# default volume (docs/compatibility.md)
LOOK_ALIKE_KEYS = [
    "twins/u1",
    "twins/u1 ",
    "twins/u1\u200b",
    "twins/\uff55\uff11",
    "twins/a/b",
    "twins/a%2Fb",
    "twins/a%2fb",
    "twins/a b",
    "twins/a%20b",
    "twins/a+b",
    "twins/%2e%2e",
]

# keys with a segment ending in a dot: valid, and each its own object, on every backend
# that has the feature "trailing_dot_keys" (Azure drops such dots, so it refuses them)
TRAILING_DOT_KEYS = [
    "twins/u1",
    "twins/u1.",
    "twins/u1..",
    "twins/...",
    "twins/v/x",
    "twins/v./x",
    "twins/v../x",
]

INVALID_KEYS = [
    "",
    "/abs",
    "/",
    "a/",
    "a//b",
    "./a",
    "a/./b",
    "..",
    "../escape",
    "a/../../escape",
    "a/..",
    ".",
    "back\\slash",
    "..\\windows",
    "nul\x00byte",
    "tab\tkey",
    "new\nline",
    "del\x7f",
    "c1\x85control",
    "x" * 256,
    "a/" + "\u00e9" * 128,  # 256 UTF-8 bytes in one segment
    "/".join(["y" * 200] * 6),  # 1205 bytes
    "\ud800surrogate",
    # not characters in XML 1.0: S3's and Azure's listings and S3's DeleteObjects cannot
    # carry them, so such a key could be written but neither listed nor batch-deleted
    "non\uffffcharacter",
    "a/\ufffe",
]
