"""The registry of backends: the ``file_storage.backends`` entry points, built-ins included."""

from __future__ import annotations

import gc
import subprocess
import sys
import warnings
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from pydantic import ValidationError

from file_storage import (
    MemoryStorageBackend,
    StorageConfigError,
    StorageSettings,
    close_storage_backend,
    create_storage_backend,
    get_storage_backend,
)

PLUGIN = """
from file_storage import MemoryStorageBackend

class FakeStorageBackend(MemoryStorageBackend):
    def __init__(self, settings):
        super().__init__()
        self.settings = settings

def build(settings):
    return FakeStorageBackend(settings)

def not_a_backend(settings):
    return "nope"

def needs_two(settings, region):  # a signature mistake: TypeError
    return build(settings)

def reads_a_missing_variable(settings):
    import os
    return os.environ["NO_SUCH_VARIABLE_HERE"]

def rejects_its_settings(settings):
    from pydantic import BaseModel, Field

    class DictSettings(BaseModel):
        url: str = Field(pattern="^https://")
        timeout: float = Field(gt=0)

    return DictSettings(url="postgres://admin:SeCrEt@db", timeout=-1)

def quotes_a_secret(settings):
    raise RuntimeError("cannot reach postgres://admin:SeCrEt@db")

def refuses_with_its_own_config_error(settings):
    from file_storage import StorageConfigError
    raise StorageConfigError("STORAGE_DICT_URL: required")

def interrupted(settings):
    raise KeyboardInterrupt

async def builds_async(settings):
    return build(settings)

def returns_a_coroutine(settings):
    return builds_async(settings)
"""


def install_plugin(
    monkeypatch: pytest.MonkeyPatch, where: Path, dist: str, entries: dict[str, str]
) -> None:
    """A distribution on sys.path: its dist-info registers ``entries`` (name -> object)."""
    module = f"{dist}_module"
    where.mkdir(parents=True, exist_ok=True)
    (where / f"{module}.py").write_text(PLUGIN)
    info = where / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = [f"{name} = {module}:{target}" for name, target in entries.items()]
    (info / "entry_points.txt").write_text("[file_storage.backends]\n" + "\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(where))


def test_builtin_backends_are_entry_points_of_the_package() -> None:
    registered = {entry.name: entry.value for entry in entry_points(group="file_storage.backends")}
    for name in ("LOCAL", "S3", "MEMORY", "GCS", "AZURE"):
        assert registered[name] == f"file_storage.backends._builtin:{name.lower()}"


def test_a_plugin_is_selected_by_storage_type(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    install_plugin(monkeypatch, tmp_path / "site", "fake_plugin", {"FAKE": "build"})
    assert "fake_plugin_module" not in sys.modules  # listing names imports nothing
    monkeypatch.setenv("STORAGE_TYPE", "fake")
    backend = create_storage_backend()
    assert type(backend).__name__ == "FakeStorageBackend"
    assert backend.settings.type == "FAKE"  # type: ignore[attr-defined]
    assert isinstance(backend, MemoryStorageBackend)


def test_settings_accept_a_plugin_name_in_any_case(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    install_plugin(monkeypatch, tmp_path / "site", "fake_plugin", {"Fake": "build"})
    assert StorageSettings(type=" fAkE ").type == "FAKE"


def test_a_plugin_is_imported_only_when_selected(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    install_plugin(monkeypatch, tmp_path / "site", "lazy_plugin", {"LAZY": "build"})
    create_storage_backend(StorageSettings(type="memory"))
    assert StorageSettings(type="lazy").type == "LAZY"
    assert "lazy_plugin_module" not in sys.modules


def test_unknown_type_names_the_installed_ones(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    install_plugin(monkeypatch, tmp_path / "site", "fake_plugin", {"FAKE": "build"})
    monkeypatch.setenv("STORAGE_TYPE", "ftp")
    with pytest.raises(StorageConfigError) as info:
        create_storage_backend()
    message = str(info.value)
    assert message.startswith("STORAGE_TYPE: must be one of ")
    for name in ("AZURE", "FAKE", "GCS", "LOCAL", "MEMORY", "S3"):
        assert name in message


def test_unknown_type_of_unvalidated_settings_names_the_installed_ones() -> None:
    settings = StorageSettings.model_construct(type="ftp")
    with pytest.raises(StorageConfigError, match="must be one of AZURE, GCS, LOCAL, MEMORY, S3"):
        create_storage_backend(settings)


def test_a_name_registered_twice_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    install_plugin(monkeypatch, tmp_path / "one", "plugin_one", {"TWIN": "build"})
    install_plugin(monkeypatch, tmp_path / "two", "plugin_two", {"twin": "build"})
    with pytest.raises(StorageConfigError, match="TWIN is registered by several") as info:
        create_storage_backend(StorageSettings(type="twin"))
    assert "plugin_one_module:build" in str(info.value)
    assert "plugin_two_module:build" in str(info.value)


def test_a_builtin_name_taken_by_a_plugin_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    install_plugin(monkeypatch, tmp_path / "site", "hijack", {"LOCAL": "build"})
    with pytest.raises(StorageConfigError, match="LOCAL is registered by several"):
        create_storage_backend(StorageSettings(type="local"))


def test_a_factory_returning_no_backend_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    install_plugin(monkeypatch, tmp_path / "site", "bad_plugin", {"BAD": "not_a_backend"})
    with pytest.raises(StorageConfigError, match="returned str, not a StorageBackend"):
        create_storage_backend(StorageSettings(type="bad"))


@pytest.mark.parametrize("factory", ["builds_async", "returns_a_coroutine"])
def test_an_async_factory_is_a_config_error_and_its_coroutine_is_closed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, factory: str
) -> None:
    install_plugin(monkeypatch, tmp_path / "site", "async_plugin", {"ASYNC": factory})
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(StorageConfigError, match=r"ASYNC backend .* is async") as raised:
            create_storage_backend(StorageSettings(type="async"))
        del raised  # its traceback holds the frames: a coroutine left open warns when freed
        gc.collect()
    assert [str(w.message) for w in seen] == []  # no "coroutine ... was never awaited"


def test_a_plugin_that_cannot_be_imported_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    install_plugin(monkeypatch, tmp_path / "site", "gone_plugin", {"GONE": "build"})
    (tmp_path / "site" / "gone_plugin_module.py").write_text("import no_such_module_here\n")
    with pytest.raises(StorageConfigError, match=r"GONE backend .* cannot be imported"):
        create_storage_backend(StorageSettings(type="gone"))


@pytest.mark.parametrize(
    ("body", "cause"),
    [
        ("raise RuntimeError('SeCrEt-from-the-plugin')\n", RuntimeError),
        ("def broken(:\n", SyntaxError),
        ("import os\nos.environ['NO_SUCH_VARIABLE_HERE']\n", KeyError),
    ],
    ids=["runtime-error", "syntax-error", "key-error"],
)
def test_a_plugin_failing_at_import_is_a_config_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, body: str, cause: type[Exception]
) -> None:
    # it escaped untyped: a caller catching StorageConfigError at start-up missed it
    install_plugin(monkeypatch, tmp_path / "site", "raising_plugin", {"RAISING": "build"})
    (tmp_path / "site" / "raising_plugin_module.py").write_text(body)
    monkeypatch.delitem(sys.modules, "raising_plugin_module", raising=False)
    with pytest.raises(
        StorageConfigError, match=r"RAISING backend \(raising_plugin_module:build\)"
    ) as info:
        create_storage_backend(StorageSettings(type="raising"))
    assert isinstance(info.value.__cause__, cause)  # the plugin's own error stays chained
    assert cause.__name__ in str(info.value)
    assert "SeCrEt" not in str(info.value)  # its message may hold anything


def test_a_missing_factory_name_in_a_plugin_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    install_plugin(monkeypatch, tmp_path / "site", "typo_plugin", {"TYPO": "biuld"})
    with pytest.raises(StorageConfigError, match=r"TYPO backend \(typo_plugin_module:biuld\)"):
        create_storage_backend(StorageSettings(type="typo"))


@pytest.mark.parametrize("raised", [KeyboardInterrupt, SystemExit])
def test_an_interrupt_while_a_plugin_imports_is_not_wrapped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, raised: type[BaseException]
) -> None:
    install_plugin(monkeypatch, tmp_path / "site", "stopped_plugin", {"STOPPED": "build"})
    (tmp_path / "site" / "stopped_plugin_module.py").write_text(f"raise {raised.__name__}\n")
    monkeypatch.delitem(sys.modules, "stopped_plugin_module", raising=False)
    with pytest.raises(raised):
        create_storage_backend(StorageSettings(type="stopped"))


@pytest.mark.parametrize(
    ("target", "cause"),
    [
        ("needs_two", TypeError),
        ("reads_a_missing_variable", KeyError),
        ("rejects_its_settings", ValidationError),
        ("quotes_a_secret", RuntimeError),
    ],
)
def test_a_factory_raising_is_a_config_error_naming_the_backend(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, target: str, cause: type[Exception]
) -> None:
    # it escaped untyped: an app catching StorageConfigError at start-up missed it
    install_plugin(monkeypatch, tmp_path / "site", "raising_factory", {"FACTORY": target})
    with pytest.raises(StorageConfigError) as info:
        create_storage_backend(StorageSettings(type="factory"))
    message = str(info.value)
    assert message.startswith(
        f"STORAGE_TYPE: the FACTORY backend (raising_factory_module:{target})"
    )
    assert cause.__name__ in message
    assert isinstance(info.value.__cause__, cause)  # the plugin's own error stays chained
    assert "SeCrEt" not in message
    assert "postgres" not in message
    assert "SeCrEt" not in repr(info.value)


async def test_get_storage_backend_gives_the_config_error_and_keeps_no_backend(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    install_plugin(
        monkeypatch, tmp_path / "site", "env_plugin", {"ENV": "reads_a_missing_variable"}
    )
    monkeypatch.setenv("STORAGE_TYPE", "env")
    await close_storage_backend()
    for _ in range(2):  # nothing half-built is kept: the next call tries again
        with pytest.raises(StorageConfigError, match=r"ENV backend .* failed to build: KeyError"):
            get_storage_backend()


def test_a_factory_rejecting_its_settings_names_the_fields_not_the_values(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    install_plugin(monkeypatch, tmp_path / "site", "strict", {"STRICT": "rejects_its_settings"})
    with pytest.raises(StorageConfigError) as info:
        create_storage_backend(StorageSettings(type="strict"))
    assert "DictSettings: invalid url, timeout" in str(info.value)
    assert "admin" not in str(info.value)


def test_a_factory_raising_a_config_error_of_its_own_passes_it_through(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    install_plugin(
        monkeypatch, tmp_path / "site", "own", {"OWN": "refuses_with_its_own_config_error"}
    )
    with pytest.raises(StorageConfigError) as info:
        create_storage_backend(StorageSettings(type="own"))
    assert str(info.value) == "STORAGE_DICT_URL: required"


def test_an_interrupt_while_a_factory_runs_is_not_wrapped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    install_plugin(monkeypatch, tmp_path / "site", "stopped", {"STOPPED": "interrupted"})
    with pytest.raises(KeyboardInterrupt):
        create_storage_backend(StorageSettings(type="stopped"))


def test_a_plugin_import_error_does_not_quote_its_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # an ImportError's text is the plugin's (it may quote a DSN); a missing module is
    # named from the exception's attribute, not its text
    install_plugin(monkeypatch, tmp_path / "site", "leaky_plugin", {"LEAKY": "build"})
    (tmp_path / "site" / "leaky_plugin_module.py").write_text(
        "raise ImportError('cannot import driver for postgres://admin:SeCrEt@db')\n"
    )
    monkeypatch.delitem(sys.modules, "leaky_plugin_module", raising=False)
    with pytest.raises(StorageConfigError, match=r"LEAKY backend .* cannot be imported") as info:
        create_storage_backend(StorageSettings(type="leaky"))
    assert "SeCrEt" not in str(info.value)
    assert isinstance(info.value.__cause__, ImportError)


def test_a_plugin_missing_a_module_names_the_module(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    install_plugin(monkeypatch, tmp_path / "site", "gone_plugin", {"GONE": "build"})
    (tmp_path / "site" / "gone_plugin_module.py").write_text("import no_such_module_here\n")
    monkeypatch.delitem(sys.modules, "gone_plugin_module", raising=False)
    with pytest.raises(StorageConfigError) as info:
        create_storage_backend(StorageSettings(type="gone"))
    assert str(info.value).endswith("cannot be imported: No module named 'no_such_module_here'")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print(*sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return set(out)


SDKS = {"obstore", "aioboto3", "aiobotocore", "botocore", "boto3", "cryptography"}


def test_selecting_local_imports_no_cloud_sdk_in_a_fresh_interpreter(tmp_path: Path) -> None:
    root = str(tmp_path)
    loaded = _modules_after(
        "from file_storage import StorageSettings, create_storage_backend\n"
        f"create_storage_backend(StorageSettings(type='local', local={{'path': {root!r}}}))"
    )
    assert not SDKS & loaded
    assert "file_storage.backends.local" in loaded
