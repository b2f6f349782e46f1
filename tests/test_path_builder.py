"""StoragePathBuilder: every method returns a valid key or raises InvalidKeyError."""

from __future__ import annotations

import contextlib
import functools
import re
import subprocess
import sys
import unicodedata
import urllib.parse
from datetime import UTC, datetime
from enum import Enum
from pathlib import PurePosixPath

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import file_storage.path_builder as path_builder_module
from file_storage import InvalidKeyError, MemoryStorageBackend, StoragePathBuilder
from file_storage._keys import validate_key, validate_prefix

HEX = "[0-9a-f]{32}"

# text a hostile client can send as a file name, a title or an identifier
HOSTILE = [
    "",
    ".",
    "..",
    "...",
    "/",
    "\\",
    "../../etc/passwd",
    "..\\..\\windows\\system32",
    "/etc/passwd",
    "a/../../b",
    "a//b",
    "nul\x00byte",
    "line\nbreak",
    "tab\there",
    "del\x7f",
    "c1\x85control",
    "\u202eexe.txt",  # right-to-left override
    "\u200bzero-width",
    "\u05e9\u05dc\u05d5\u05dd.txt",  # Hebrew, right to left
    "\u0645\u0631\u062d\u0628\u0627",  # Arabic
    "\U0001f600\U0001f468\u200d\U0001f469\u200d\U0001f467",  # emoji, ZWJ family
    "e\u0301\u0301\u0301",  # stacked combining marks
    "\ufb01le \uff2a\uff30\uff27",  # ligature, fullwidth
    " ",
    "-rf",
    "CON",
    "x" * 10_000,
    "\u00e9" * 1_000,
]


@pytest.fixture
def paths() -> StoragePathBuilder:
    return StoragePathBuilder()


@pytest.fixture
def frozen_now(monkeypatch: pytest.MonkeyPatch) -> datetime:
    now = datetime(2024, 3, 9, 23, 59, tzinfo=UTC)
    monkeypatch.setattr(path_builder_module, "_utcnow", lambda: now)
    return now


def assert_valid_key(key: str) -> None:
    assert validate_key(key) == key


# ------------------------------------------------------------------ join


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("a",), "a"),
        (("a", "b", "c.txt"), "a/b/c.txt"),
        (("a/b", "c/d.txt"), "a/b/c/d.txt"),
        ((PurePosixPath("a/b"), "c"), "a/b/c"),
        (("users", "\u00e9t\u00e9", "\U0001f600.png"), "users/\u00e9t\u00e9/\U0001f600.png"),
        (("with space", "[brackets]"), "with space/[brackets]"),
    ],
)
def test_join_returns_parts_joined_by_slash(
    paths: StoragePathBuilder, parts: tuple[str, ...], expected: str
) -> None:
    assert paths.join(*parts) == expected


@pytest.mark.parametrize(
    "parts",
    [
        (),
        ("",),
        ("a", ""),
        ("a", PurePosixPath()),
        ("a", "."),
        ("a", ".."),
        ("..", "etc", "passwd"),
        ("a", "../../b"),
        ("/etc", "passwd"),
        ("a/", "b"),
        ("a", "b/"),
        ("a//b",),
        ("a\\b",),
        ("a", "b\x00"),
        ("a", "line\nbreak"),
        ("a", "x" * 256),
        ("a/" * 600,),
    ],
)
def test_join_rejects_bad_parts(paths: StoragePathBuilder, parts: tuple[str, ...]) -> None:
    with pytest.raises(InvalidKeyError):
        paths.join(*parts)


def test_join_rejects_a_non_string_part(paths: StoragePathBuilder) -> None:
    with pytest.raises(InvalidKeyError):
        paths.join("a", 3)  # type: ignore[arg-type]


# ------------------------------------------------------------------ user_root / user_path


@pytest.mark.parametrize(
    "slug",
    [
        "u1",
        "jane-doe",
        "a_b.c",
        "3f2a9c1e-0000-4000-8000-000000000000",
        "\u00e9l\u00e8ve",
        "x" * 255,
    ],
)
def test_user_root_puts_a_slug_under_users(paths: StoragePathBuilder, slug: str) -> None:
    assert paths.user_root(slug) == f"users/{slug}"


@pytest.mark.parametrize(
    "slug",
    [
        "",
        ".",
        "..",
        ".hidden",
        "trailing.",
        "a/b",
        "../admin",
        "a\\b",
        "nul\x00",
        "line\nbreak",
        "with space",
        " padded",
        "nbsp\u00a0",
        "\u202eevil",
        "zero\u200bwidth",
        "e\u0301",  # not NFC: would be a second folder for "é"
        "x" * 256,
        "\u00e9" * 128,  # 256 UTF-8 bytes
    ],
)
def test_user_root_rejects_a_hostile_slug(paths: StoragePathBuilder, slug: str) -> None:
    with pytest.raises(InvalidKeyError):
        paths.user_root(slug)


def test_user_root_rejects_a_non_string_slug(paths: StoragePathBuilder) -> None:
    with pytest.raises(InvalidKeyError):
        paths.user_root(None)  # type: ignore[arg-type]


def test_user_path_joins_parts_below_the_user_root(paths: StoragePathBuilder) -> None:
    assert paths.user_path("u1", "media/photos", "a.png") == "users/u1/media/photos/a.png"


def test_a_part_holding_a_slash_spans_folders_but_stays_in_the_user_folder(
    paths: StoragePathBuilder,
) -> None:
    # documented: only the slug is one checked segment; an app checks its own ids
    assert paths.user_path("u1", "sessions", "s1/x") == "users/u1/sessions/s1/x"
    for part in ["s1/../../u2", "/u2", "s1\\..", "s1/./x", "s1//x"]:
        with pytest.raises(InvalidKeyError):
            paths.user_path("u1", "sessions", part)


def test_user_path_without_parts_is_the_user_root(paths: StoragePathBuilder) -> None:
    assert paths.user_path("u1") == "users/u1"


class Tenant(str, Enum):  # noqa: UP042 (the mixin whose str() is not its text)
    """A str-valued enum, as applications keep fixed tenants: formats as ``Tenant.ACME``."""

    ACME = "acme"


class Disguised(str):
    """A str whose formatting differs from its text: what the slug check must not trust."""

    def __format__(self, spec: str) -> str:
        return "bob/private"


def test_user_root_of_a_str_enum_slug_is_its_value(paths: StoragePathBuilder) -> None:
    assert paths.user_root(Tenant.ACME) == "users/acme"
    assert paths.user_path(Tenant.ACME, "a.txt") == paths.join("users", Tenant.ACME, "a.txt")


def test_user_root_keys_the_text_it_checked(paths: StoragePathBuilder) -> None:
    # the slug "alice" passed every check: its key is alice's folder, never bob's
    assert paths.user_root(Disguised("alice")) == "users/alice"
    assert type(paths.user_root(Disguised("alice"))) is str


def test_temp_appends_the_text_of_a_str_subclass_suffix(paths: StoragePathBuilder) -> None:
    assert re.fullmatch(f"temp/{HEX}\\.part", paths.temp(Disguised(".part")))


@pytest.mark.parametrize("part", ["", "..", "../u2", "../../etc/passwd", "/abs", "a\\b", "a\x00"])
def test_user_path_cannot_escape_the_user_folder(paths: StoragePathBuilder, part: str) -> None:
    with pytest.raises(InvalidKeyError):
        paths.user_path("u1", part)


@pytest.mark.parametrize("slug", ["", "..", "a/b", "\u202e"])
def test_user_path_rejects_a_hostile_slug(paths: StoragePathBuilder, slug: str) -> None:
    with pytest.raises(InvalidKeyError):
        paths.user_path(slug, "file.txt")


# any text a client sends as an id or a name: every plane, format characters, surrogates
ANY_TEXT = st.text(st.characters(codec=None), max_size=40) | st.sampled_from(HOSTILE)
PROPERTIES = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _root_or_none(paths: StoragePathBuilder, slug: str) -> str | None:
    try:
        return paths.user_root(slug)
    except InvalidKeyError:
        return None


# how one tenant's id may be bent to reach another's folder
BENDS = [
    str.upper,
    str.casefold,
    functools.partial(unicodedata.normalize, "NFD"),
    functools.partial(unicodedata.normalize, "NFKC"),
    lambda slug: slug + ".",
    lambda slug: slug + " ",
    lambda slug: slug + "\u200b",
    lambda slug: "\u202e" + slug,
    lambda slug: slug + "/x",
    lambda slug: slug + "\\x",
    lambda slug: slug[:-1],
    lambda slug: slug + slug[-1:],
    lambda slug: urllib.parse.quote(slug, safe=""),
]


@PROPERTIES
@given(
    a=ANY_TEXT | st.sampled_from(["u1", "Jane-Doe", "\u00c9l\u00e8ve", "x" * 255]), data=st.data()
)
def test_two_slugs_never_share_or_nest_folders(
    paths: StoragePathBuilder, a: str, data: st.DataObject
) -> None:
    b = data.draw(ANY_TEXT | st.sampled_from(BENDS).map(lambda bend: bend(a)))
    root_a, root_b = _root_or_none(paths, a), _root_or_none(paths, b)
    if a == b or root_a is None or root_b is None:
        return
    assert root_a != root_b
    assert not (root_a + "/").startswith(root_b + "/")
    assert not (root_b + "/").startswith(root_a + "/")


@PROPERTIES
@given(slug=st.sampled_from(["u1", "u", "\u00e9l\u00e8ve"]), part=ANY_TEXT, name=ANY_TEXT)
def test_keys_of_a_user_stay_under_that_users_quota_prefix(
    paths: StoragePathBuilder, slug: str, part: str, name: str
) -> None:
    root = paths.user_root(slug)
    folder = validate_prefix(root)  # what set_quota(user_root(slug)) covers
    keys = [paths.user_path(slug, paths.safe_name(name)), paths.unique(root, name)]
    with contextlib.suppress(InvalidKeyError):  # a part that is no key is refused
        keys.append(paths.user_path(slug, part, paths.safe_name(name)))
    for key in keys:
        assert key.startswith(folder), key
        assert_valid_key(key)


# ------------------------------------------------------------------ unique


@pytest.mark.parametrize(
    ("filename", "extension"),
    [
        ("photo.png", ".png"),
        ("PHOTO.JPG", ".jpg"),
        ("a.TAR.GZ", ".gz"),
        ("archive.tar.gz", ".gz"),
        ("noext", ""),
        ("x.", ""),
        (".bashrc", ""),
        ("...", ""),
        ("../../etc/passwd", ""),
        ("..\\..\\boot.ini", ".ini"),
        ("C:\\Users\\me\\report.DOCX", ".docx"),
        ("a.b\\c", ""),
        ("a.b/c", ""),
        ("evil.p\x00h\np", ".php"),
        ("x.\U0001f600", ""),
        ("x.\u00c9XE", ".exe"),
        ("x.\uff2a\uff30\uff27", ".jpg"),
        ("x.\u202egpj", ".gpj"),
        ("x.mp4 ", ".mp4"),
        ("x." + "a" * 33, ""),
        ("x." + "a" * 32, "." + "a" * 32),
        ("", ""),
        ("\u0645\u0644\u0641.pdf", ".pdf"),
        # every script transliterated as safe_name does, never a letter dropped from it
        ("\u043e\u0442\u0447\u0451\u0442.\u041f\u0414\u0424", ".pdf"),  # Cyrillic
        ("x.\u03a1DF", ".rdf"),  # Greek capital rho
        ("x.\u6587\u6863", ".wendang"),
        ("y" * 10_000 + ".txt", ".txt"),
    ],
)
def test_unique_keeps_only_the_sanitized_last_extension(
    paths: StoragePathBuilder, frozen_now: datetime, filename: str, extension: str
) -> None:
    key = paths.unique("uploads", filename)
    assert re.fullmatch(f"uploads/2024/03/{HEX}{re.escape(extension)}", key), key
    assert_valid_key(key)


@pytest.mark.parametrize("filename", HOSTILE)
def test_unique_lets_nothing_but_the_extension_through(
    paths: StoragePathBuilder, frozen_now: datetime, filename: str
) -> None:
    key = paths.unique("uploads", filename)
    assert re.fullmatch(f"uploads/2024/03/{HEX}(\\.[a-z0-9]{{1,32}})?", key), key


def test_unique_uses_the_utc_year_and_month(paths: StoragePathBuilder) -> None:
    before = datetime.now(UTC)
    key = paths.unique("uploads", "a.txt")
    after = datetime.now(UTC)
    assert key.split("/")[1:3] in (
        [f"{before:%Y}", f"{before:%m}"],
        [f"{after:%Y}", f"{after:%m}"],
    )


def test_unique_accepts_a_nested_group(paths: StoragePathBuilder, frozen_now: datetime) -> None:
    key = paths.unique(PurePosixPath("users/u1/media"), "a.png")
    assert re.fullmatch(f"users/u1/media/2024/03/{HEX}\\.png", key)


def test_unique_never_repeats(paths: StoragePathBuilder) -> None:
    keys = {paths.unique("uploads", "a.txt") for _ in range(1_000)}
    assert len(keys) == 1_000


@pytest.mark.parametrize("group", ["", "/", "/abs", "..", "a/../b", "a/", "a//b", "a\\b", "a\x00"])
def test_unique_rejects_a_bad_group(paths: StoragePathBuilder, group: str) -> None:
    with pytest.raises(InvalidKeyError):
        paths.unique(group, "a.txt")


def test_unique_rejects_a_non_string_filename(paths: StoragePathBuilder) -> None:
    with pytest.raises(InvalidKeyError):
        paths.unique("uploads", b"a.txt")  # type: ignore[arg-type]


# ------------------------------------------------------------------ temp


def test_temp_without_suffix(paths: StoragePathBuilder) -> None:
    assert re.fullmatch(f"temp/{HEX}", paths.temp())


@pytest.mark.parametrize("suffix", [".part", "-upload.bin", ".\u00e9t\u00e9", "..", "."])
def test_temp_appends_the_suffix_as_given(paths: StoragePathBuilder, suffix: str) -> None:
    key = paths.temp(suffix)
    assert re.fullmatch(f"temp/{HEX}{re.escape(suffix)}", key)
    assert_valid_key(key)


@pytest.mark.parametrize(
    "suffix", ["/x", "a/b", "/../../etc/passwd", "\\x", "x\x00", "x\n", "x" * 224]
)
def test_temp_rejects_a_bad_suffix(paths: StoragePathBuilder, suffix: str) -> None:
    with pytest.raises(InvalidKeyError):
        paths.temp(suffix)


def test_temp_never_repeats(paths: StoragePathBuilder) -> None:
    assert len({paths.temp() for _ in range(1_000)}) == 1_000


# ------------------------------------------------------------------ safe_name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("Cr\u00e8me Br\u00fbl\u00e9e.PDF", "Creme_Brulee.PDF"),
        ("Stra\u00dfe  Plan.tar.gz", "Strasse_Plan.tar.gz"),
        ("\u00c6sir \u00f8l", "AEsir_ol"),
        ("\ufb01le", "file"),
        ("\uff2a\uff30\uff27", "JPG"),
        ("e\u0301\u0301\u0301", "e"),
        ("file name (1).JPG", "file_name_1.JPG"),
        ("a---b___c...d", "a-b_c.d"),
        ("../../etc/passwd", "etc_passwd"),
        ("..\\..\\windows\\system32", "windows_system32"),
        ("a/b\\c", "a_b_c"),
        (".bashrc", "bashrc"),
        ("  spaced  ", "spaced"),
        ("-rf", "rf"),
        ("x.", "x"),
        ("nul\x00byte", "nulbyte"),
        ("tab\there", "tab_here"),
        ("\u202eexe.txt", "exe.txt"),
        ("\u043e\u0442\u0447\u0451\u0442.pdf", "otchet.pdf"),  # Cyrillic, transliterated
        ("\U0001f600.png", "file.png"),
        ("\u05e9\u05dc\u05d5\u05dd.tar.gz", "slvm.tar.gz"),
        ("", "file"),
        (".", "file"),
        ("..", "file"),
        ("...", "file"),
        ("\U0001f600", "file"),
        ("\u0645\u0631\u062d\u0628\u0627", "mrhb"),
        ("\x00\x01\x02", "file"),
    ],
)
def test_safe_name_examples(paths: StoragePathBuilder, text: str, expected: str) -> None:
    assert paths.safe_name(text) == expected


@pytest.mark.parametrize("text", HOSTILE)
def test_safe_name_always_gives_one_safe_ascii_segment(
    paths: StoragePathBuilder, text: str
) -> None:
    name = paths.safe_name(text)
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name), name
    assert len(name.encode()) <= 255
    assert not re.search(r"([._-])\1", name)
    assert_valid_key(name)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\u041f\u0440\u0438\u0432\u0435\u0442", "Privet"),  # Cyrillic
        ("\u041e\u0442\u0447\u0451\u0442 2024.docx", "Otchet_2024.docx"),
        ("\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac", "Ellinika"),  # Greek
        ("\u4f60\u597d\u4e16\u754c", "NiHaoShiJie"),  # Chinese
        ("\u6771\u4eac 2024.jpg", "DongJing_2024.jpg"),  # Japanese kanji
        ("\u3053\u3093\u306b\u3061\u306f", "konnichiha"),  # hiragana
        ("\uc548\ub155\ud558\uc138\uc694.txt", "AnNyeongHaSeYo.txt"),  # Hangul syllables
        ("\u0645\u0631\u062d\u0628\u0627.pdf", "mrhb.pdf"),  # Arabic
        ("\u05e9\u05dc\u05d5\u05dd", "slvm"),  # Hebrew
    ],
)
def test_safe_name_transliterates_every_script(
    paths: StoragePathBuilder, text: str, expected: str
) -> None:
    assert paths.safe_name(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\U0001f600", "file"),
        ("\U0001f600\U0001f468\u200d\U0001f469\u200d\U0001f467", "file"),  # ZWJ family
        ("\u2764\ufe0f\U0001f44d\U0001f3fd", "file"),  # heart + variation, skin tone
        ("\u2764\ufe0f.png", "file.png"),
    ],
)
def test_safe_name_of_emoji_only_falls_back_to_file(
    paths: StoragePathBuilder, text: str, expected: str
) -> None:
    assert paths.safe_name(text) == expected


def test_safe_name_of_mixed_scripts_keeps_every_word(paths: StoragePathBuilder) -> None:
    # Latin, Cyrillic, kanji, an emoji, Greek
    text = (
        "Caf\u00e9 \u041c\u043e\u0441\u043a\u0432\u0430 \u6771\u4eac \U0001f600 "
        "\u0391\u03b8\u03ae\u03bd\u03b1.PDF"
    )
    assert paths.safe_name(text) == "Cafe_Moskva_DongJing_Athina.PDF"


@pytest.mark.parametrize(
    "text",
    [
        # punctuation between transliterated words
        "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! "
        "(\u043a\u043e\u043f\u0438\u044f).docx",
        # "\u00bd" transliterates to "1/2", which must not become a separator
        "\u00bd \u0441\u0442\u0430\u043a\u0430\u043d\u0430 / \u534a\u676f",
        "\u0661\u0662\u0663 \u0645\u0644\u0641",  # Arabic-Indic digits
        "\u4f60" * 300 + ".txt",  # long once transliterated
        "\ufdfa",  # one Arabic ligature that spells out a whole phrase, with a backquote
    ],
)
def test_safe_name_of_any_script_is_one_valid_stable_segment(
    paths: StoragePathBuilder, text: str
) -> None:
    name = paths.safe_name(text)
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name), name
    assert len(name.encode()) <= 255
    assert_valid_key(name)
    assert paths.safe_name(text) == name  # the same text, the same name
    assert paths.safe_name(name) == name


def test_anyascii_loads_only_when_a_name_needs_it() -> None:
    code = (
        "import sys, file_storage; p = file_storage.StoragePathBuilder()\n"
        "p.safe_name('Cr\\u00e8me.pdf'); print('anyascii' in sys.modules)\n"
        "p.safe_name('\\u041f\\u0440\\u0438'); print('anyascii' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "True"]


def test_safe_name_cuts_long_names_and_keeps_the_extension(paths: StoragePathBuilder) -> None:
    name = paths.safe_name("x" * 1_000 + ".txt")
    assert len(name) == 255
    assert name.endswith("xxx.txt")


def test_safe_name_cuts_long_names_without_extension(paths: StoragePathBuilder) -> None:
    assert paths.safe_name("x" * 1_000) == "x" * 255


def test_safe_name_is_idempotent(paths: StoragePathBuilder) -> None:
    for text in HOSTILE:
        once = paths.safe_name(text)
        assert paths.safe_name(once) == once


def test_safe_name_rejects_a_non_string(paths: StoragePathBuilder) -> None:
    with pytest.raises(InvalidKeyError):
        paths.safe_name(None)  # type: ignore[arg-type]


# ------------------------------------------------------------------ subclassing


class AppPaths(StoragePathBuilder):
    """An application's layout, built on the base methods."""

    def session_step(self, user_slug: str, session_id: str, step: int) -> str:
        return self.user_path(user_slug, "sessions", session_id, f"step-{step:03d}")


def test_a_subclass_builds_its_layout_on_the_base_methods() -> None:
    assert AppPaths().session_step("u1", "s42", 7) == "users/u1/sessions/s42/step-007"


@pytest.mark.parametrize("session_id", ["", "..", "../../u2", "a/", "a\\b", "a\x00"])
def test_a_subclass_inherits_the_checks(session_id: str) -> None:
    with pytest.raises(InvalidKeyError):
        AppPaths().session_step("u1", session_id, 1)


async def test_builder_keys_work_on_a_backend(paths: StoragePathBuilder) -> None:
    backend = MemoryStorageBackend()
    key = paths.user_path("u1", paths.safe_name("\U0001f600 holiday \u00e9t\u00e9.JPG"))
    await backend.save(key, b"x")
    assert await backend.list_files(paths.user_root("u1")) == ["users/u1/holiday_ete.JPG"]


def _peak_memory(call: functools.partial[str]) -> tuple[str, int]:
    """What ``call`` returns, and the peak of memory it allocated meanwhile."""
    import tracemalloc

    tracemalloc.start()
    try:
        return call(), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# U+FDFA is one character that NFKD spells in 18: transliterating megabytes of it whole
# took gigabytes; the name is at most 255 bytes whatever the text's length
EXPANDING = "\ufdfa" * 200_000


def test_safe_name_of_a_huge_text_keeps_its_extension_in_little_memory() -> None:
    name, peak = _peak_memory(functools.partial(StoragePathBuilder().safe_name, EXPANDING + ".pdf"))
    assert peak < 4 << 20
    assert name.endswith(".pdf")
    assert len(name) <= 255


def test_unique_with_a_huge_extension_drops_it_in_little_memory() -> None:
    key, peak = _peak_memory(functools.partial(StoragePathBuilder().unique, "u", "a." + EXPANDING))
    assert peak < 4 << 20
    assert re.fullmatch(rf"u/\d{{4}}/\d{{2}}/{HEX}", key)
