"""The one place that decides keys: applications subclass it to add their own layout.

Every method returns a key that already passed :func:`validate_key`, so it works
unchanged on every backend. Untrusted text (a user's file name) reaches a key only
through :meth:`StoragePathBuilder.safe_name` or the extension rule of
:meth:`StoragePathBuilder.unique`; a user slug is checked as one segment, never
rewritten: a hostile one raises :class:`InvalidKeyError` instead of silently landing in
some other folder. Other parts are keys or folders: one holding ``/`` spans several
folders (never outside the key grammar), so an id taken from a request (a session id)
must be checked to be one segment before it becomes a part.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from datetime import UTC, datetime
from pathlib import PurePosixPath

from file_storage._keys import MAX_SEGMENT_BYTES, KeyLike, validate_key
from file_storage.errors import InvalidKeyError

__all__ = ["StoragePathBuilder"]

MAX_EXTENSION_CHARS = 32  # longer is not an extension but an attempt to smuggle a name in
FALLBACK_NAME = "file"
# the characters of a text safe_name reads: a name is at most 255 bytes, and transliterating
# megabytes (U+FDFA alone is 18 characters in NFKD) would take seconds and gigabytes
MAX_TEXT_CHARS = 1024
# the characters of an extension as given that are read: more transliterate to more than
# MAX_EXTENSION_CHARS unless nearly all of them vanish (emoji), and then it is dropped
MAX_RAW_EXTENSION_CHARS = 4 * MAX_EXTENSION_CHARS
# Letters NFKD does not decompose into ASCII
_TRANSLITERATE = str.maketrans(
    {
        "ß": "ss",
        "ẞ": "SS",
        "æ": "ae",
        "Æ": "AE",
        "œ": "oe",
        "Œ": "OE",
        "ø": "o",
        "Ø": "O",
        "đ": "d",
        "Đ": "D",
        "ð": "d",
        "Ð": "D",
        "ł": "l",
        "Ł": "L",
        "þ": "th",
        "Þ": "Th",
        "\u0131": "i",  # dotless i
    }
)
_SEPARATORS = re.compile(r"[\s/\\]+")
_NOT_SAFE = re.compile(r"[^A-Za-z0-9._-]")
_REPEATS = re.compile(r"([._-])\1+")
_EDGE = "._-"
_EXT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
# Unicode categories a slug may not contain: controls, format characters (bidi overrides,
# zero-width joiners), surrogates, private use, unassigned, and every kind of space
_BAD_SLUG_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _text(value: object, what: str, operation: str) -> str:
    if isinstance(value, PurePosixPath):
        value = "" if value == PurePosixPath() else value.as_posix()
    if not isinstance(value, str):
        raise InvalidKeyError(
            f"{what} must be a str, not {type(value).__name__}", operation=operation
        )
    # the plain text of a str subclass: an f-string would format an enum member as
    # "Tenant.ACME", or a subclass as anything, and the key would hold other text than
    # the one checked
    return value if type(value) is str else str.__str__(value)


class StoragePathBuilder:
    """Builds keys for an application's storage layout.

    Subclass it to name your own layout once, on top of these methods::

        class AppPaths(StoragePathBuilder):
            def avatar(self, user_slug: str) -> str:
                return self.user_path(user_slug, "avatar.png")

    Every method returns a valid key or raises :class:`InvalidKeyError`; none of them
    rewrites what it is given except :meth:`safe_name`, which exists to do exactly that.
    """

    def join(self, *parts: KeyLike) -> str:
        """Join key parts with ``/`` and validate the result.

        Args:
            *parts: keys or folders; each may itself contain ``/`` (``"a/b"``).

        Returns:
            The key ``"part1/part2/..."``.

        Raises:
            InvalidKeyError: no parts, an empty part, or a result that breaks the key
                grammar (``..``, ``//``, a leading or trailing ``/``, a backslash, a
                control character, too long).
        """
        texts = [_text(part, "a key part", "join") for part in parts]
        if not texts:
            raise InvalidKeyError("nothing to join", operation="join")
        if "" in texts:
            raise InvalidKeyError("empty part", operation="join")
        return validate_key("/".join(texts), "join")

    def user_root(self, user_slug: str) -> str:
        """The folder holding everything of one user: ``users/<user_slug>``.

        A slug is an identifier, not a display name, so it is checked and never rewritten:
        two different slugs can never share a folder. It must be one key segment of at
        most 255 UTF-8 bytes, in Unicode NFC form, with no ``/``, ``\\``, whitespace,
        control or format characters (such as bidi overrides), and must not start or end
        with ``.``. Use the user's id: never a display name, nor :meth:`safe_name` of
        one, which gives ``"Zoe"`` for both ``"Zoë"`` and ``"Zoe"``. Two slugs that differ
        only in case share a folder on a case-insensitive local disk.

        Args:
            user_slug: the user's identifier (``"u123"``, a UUID, ``"jane-doe"``).

        Returns:
            The key ``"users/<user_slug>"``.

        Raises:
            InvalidKeyError: the slug is empty or breaks the rules above.
        """
        slug = _text(user_slug, "a user slug", "user_root")

        def fail(reason: str) -> InvalidKeyError:
            return InvalidKeyError(f"invalid user slug: {reason}", operation="user_root")

        if not slug:
            raise fail("empty")
        if "/" in slug or "\\" in slug:
            raise fail("contains a path separator")
        if any(unicodedata.category(ch) in _BAD_SLUG_CATEGORIES for ch in slug):
            raise fail("contains whitespace, a control or a format character")
        if slug.startswith(".") or slug.endswith("."):
            raise fail("starts or ends with '.'")
        if unicodedata.normalize("NFC", slug) != slug:
            raise fail("not in Unicode NFC form")
        if len(slug.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise fail(f"longer than {MAX_SEGMENT_BYTES} UTF-8 bytes")
        return validate_key(f"users/{slug}", "user_root")

    def user_path(self, user_slug: str, *parts: KeyLike) -> str:
        """A key inside one user's folder: ``users/<user_slug>/<parts...>``.

        Args:
            user_slug: checked as in :meth:`user_root`.
            *parts: keys or folders below the user's folder, joined as in :meth:`join`;
                none gives the user's folder itself. A part holding ``/`` is several
                folders (``"s1/x"`` lands inside ``s1``): check that an id from a request
                is one segment before passing it.

        Returns:
            The key ``"users/<user_slug>/part1/part2/..."``.

        Raises:
            InvalidKeyError: a bad slug or a bad part.
        """
        root = self.user_root(user_slug)
        return self.join(root, *parts) if parts else root

    def unique(self, group: KeyLike, filename: str) -> str:
        """A fresh key for an upload: ``<group>/YYYY/MM/<uuid4 hex><.ext>``.

        Only the extension of ``filename`` reaches the key: its last one, transliterated
        as in :meth:`safe_name`, lower-cased and reduced to ``[a-z0-9]`` (``"a.TAR.GZ"``
        gives ``.gz``). It is dropped when nothing is left, when it is longer than 32
        characters (or than 128 as given: it is not even read then), and for a name with
        no extension (``"noext"``, ``"x."``,
        ``".bashrc"``: a leading dot marks a hidden name, as in :mod:`pathlib`). Year and
        month are UTC.

        Args:
            group: the folder to put it in, a key (``"uploads"``, ``"users/u1/media"``).
            filename: the name the file came with; untrusted, may be anything.

        Returns:
            A key no one else will get, such as ``"uploads/2024/05/3f2a...9c.png"``.

        Raises:
            InvalidKeyError: ``group`` is not a valid key, or ``filename`` is not a str.
        """
        folder = validate_key(group, "unique")
        name = _text(filename, "a file name", "unique")
        now = _utcnow()
        return validate_key(
            f"{folder}/{now:%Y}/{now:%m}/{uuid.uuid4().hex}{_extension(name)}", "unique"
        )

    def temp(self, suffix: str = "") -> str:
        """A fresh key for scratch data: ``temp/<uuid4 hex><suffix>``.

        Args:
            suffix: appended as given, e.g. ``".part"``; validated, never rewritten.

        Returns:
            The key ``"temp/<uuid4 hex><suffix>"``.

        Raises:
            InvalidKeyError: ``suffix`` contains ``/``, a backslash or a control
                character, or makes the name longer than 255 UTF-8 bytes.
        """
        text = _text(suffix, "a suffix", "temp")
        if "/" in text:
            raise InvalidKeyError("a suffix must not contain '/'", operation="temp")
        return validate_key(f"temp/{uuid.uuid4().hex}{text}", "temp")

    def safe_name(self, text: str) -> str:
        """Turn any text (a user's file name, a title) into a safe ASCII key segment.

        Every script is transliterated: Latin letters by Unicode NFKD with combining
        marks dropped, plus a few letters NFKD leaves alone (``"Crème Brûlée.PDF"``
        gives ``"Creme_Brulee.PDF"``, ``ß`` gives ``ss``); Cyrillic, Greek, CJK, Arabic,
        Hebrew and the rest with `anyascii <https://pypi.org/project/anyascii/>`_
        (``"Привет"`` gives ``"Privet"``, ``"東京"`` gives ``"DongJing"``). Whitespace and
        ``/`` or ``\\`` become ``_``; emoji and anything else outside ``[A-Za-z0-9._-]``
        (controls, punctuation) are dropped; runs of ``.``, ``_`` or ``-`` collapse to
        one. Leading and trailing ``.``, ``_`` and ``-`` are stripped, so the result is
        never ``.``, ``..``, hidden or mistaken for a command-line option. It is cut to
        255 bytes, keeping the extension. Of a text over 1024 characters only the first
        ones and its last extension are read, so a huge text costs no more than that.
        When only an extension survives (``"😀.pdf"``) the name becomes ``"file.pdf"``;
        when nothing survives, ``"file"``. The same text always gives the same name.

        Args:
            text: any text.

        Returns:
            A non-empty segment of ``[A-Za-z0-9._-]``, at most 255 bytes.

        Raises:
            InvalidKeyError: ``text`` is not a str.
        """
        raw = _bounded(_text(text, "a name", "safe_name"))
        name = _SEPARATORS.sub("_", _any_script(raw))
        name = _REPEATS.sub(r"\1", _NOT_SAFE.sub("", name))
        body = name.strip(_EDGE)
        lead = name[: len(name) - len(name.lstrip(_EDGE))]
        # "отчёт.pdf" lost its name and kept ".pdf"; ".bashrc" was hidden on purpose
        if body and "." in lead and not raw.lstrip().startswith("."):
            body = f"{FALLBACK_NAME}.{body}"
        name = _fit(body) or FALLBACK_NAME
        return validate_key(name, "safe_name")


def _ascii(text: str) -> str:
    """Transliterate: NFKD ("é" is "e" plus a combining accent), accents dropped."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_TRANSLITERATE))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _any_script(text: str) -> str:
    """Every script in ASCII: Latin as :func:`_ascii` does, the others by anyascii.

    Emoji are dropped: anyascii spells them as ``:shortcode:``, which is no file name.
    """
    latin = _ascii(text)
    if latin.isascii():
        return latin
    # imported here: `import file_storage` stays light (stdlib, pydantic, aiofiles)
    from anyascii import anyascii

    out: list[str] = []
    for ch in text:  # per character: NFKD would split a Hangul syllable into jamo
        spelled = _ascii(ch)
        if not spelled.isascii():
            spelled = anyascii(ch)
            if len(spelled) > 2 and spelled[0] == spelled[-1] == ":":
                continue
        out.append(spelled)
    return "".join(out)


def _bounded(text: str) -> str:
    """``text``, or when longer than ``MAX_TEXT_CHARS`` its head and its last extension."""
    if len(text) <= MAX_TEXT_CHARS:
        return text
    _, dot, ext = text[-(MAX_RAW_EXTENSION_CHARS + 1) :].rpartition(".")
    tail = dot + ext if dot else ""
    return text[: MAX_TEXT_CHARS - len(tail)] + tail


def _extension(filename: str) -> str:
    base = filename[max(filename.rfind("/"), filename.rfind("\\")) + 1 :]
    stem, dot, ext = base.rpartition(".")
    if not dot or not stem.strip("."):  # "noext", ".bashrc", "..."
        return ""
    if len(ext) > MAX_RAW_EXTENSION_CHARS:
        return ""
    clean = "".join(ch for ch in _any_script(ext).lower() if ch in _EXT_CHARS)
    if not clean or len(clean) > MAX_EXTENSION_CHARS:
        return ""
    return "." + clean


def _fit(name: str) -> str:
    """Cut an ASCII name to the segment limit, keeping a short extension."""
    if len(name) <= MAX_SEGMENT_BYTES:
        return name
    stem, dot, ext = name.rpartition(".")
    if dot and stem and len(ext) <= MAX_EXTENSION_CHARS:
        return stem[: MAX_SEGMENT_BYTES - len(ext) - 1].rstrip(_EDGE) + "." + ext
    return name[:MAX_SEGMENT_BYTES].rstrip(_EDGE)
