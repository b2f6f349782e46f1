"""The registry of backends: the ``file_storage.backends`` entry points, built-ins included."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from file_storage import (
    MemoryStorageBackend,
    StorageConfigError,
    StorageSettings,
    create_storage_backend,
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
