"""The package as users get it: a wheel and sdist that build, pass ``twine check --strict``,
install into a fresh virtual environment and work there, types included.

The fresh environment gets the wheel with ``--no-deps``; its dependencies (pydantic,
aioboto3, fastapi, mypy's targets) come from this test run's environment through a
``.pth`` line, so nothing is downloaded. The wheel's own ``file_storage`` comes first on
``sys.path``, and the tests check that it, not this checkout, is what gets imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
import venv
from dataclasses import dataclass
from pathlib import Path

import pytest

import file_storage

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Installed:
    dist: Path  # the wheel and the sdist
    python: Path  # the fresh environment's interpreter
    scripts: Path


def _run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "STORAGE_"))}
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    work = tmp_path_factory.mktemp("packaging")
    dist = work / "dist"
    # sdist first, then the wheel from the unpacked sdist: what a release does
    built = _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, ROOT, cwd=work)
    # the SPDX license and the rest of the metadata in the form setuptools wants today
    output = built.stdout + built.stderr
    assert "deprecat" not in output.lower(), output
    env_dir = work / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = _run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=work)
    (Path(site.stdout.strip()) / "_test_deps.pth").write_text(
        sysconfig.get_path("purelib") + "\n", encoding="utf-8"
    )
    (wheel,) = dist.glob("*.whl")
    pip = (sys.executable, "-m", "pip", "--python", python, "install", "--quiet")
    _run(*pip, "--no-deps", "--no-index", wheel, cwd=work)
    return Installed(dist, python, env_dir / "bin")


def test_wheel_and_sdist_pass_twine_check_strict(installed: Installed) -> None:
    files = sorted(installed.dist.iterdir())
    assert sorted(f.suffix for f in files) == [".gz", ".whl"]
    _run(sys.executable, "-m", "twine", "check", "--strict", *files, cwd=installed.dist)


def test_the_wheel_holds_py_typed_and_the_license(installed: Installed) -> None:
    import zipfile

    (wheel,) = installed.dist.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "file_storage/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA")))
    assert b"License-Expression: MIT" in metadata


def test_installed_wheel_imports_and_round_trips(installed: Installed, tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import asyncio, importlib.metadata, sys
        import file_storage
        from file_storage import create_storage_backend

        assert file_storage.__file__.startswith(sys.prefix), file_storage.__file__
        assert importlib.metadata.version("file_storage") == file_storage.__version__

        async def main() -> None:
            async with create_storage_backend() as storage:
                key = await storage.save("hello/world.txt", b"hi")
                assert await storage.load(key) == b"hi"
                assert await storage.list_files() == ["hello/world.txt"]

        asyncio.run(main())
        print(file_storage.__version__)
        """
    )
    result = _run(installed.python, "-c", code, cwd=tmp_path)
    assert result.stdout.strip() == file_storage.__version__
    assert (tmp_path / "storage" / "hello" / "world.txt").read_bytes() == b"hi"


def test_types_resolve_from_the_wheel_under_mypy_strict(
    installed: Installed, tmp_path: Path
) -> None:
    user = tmp_path / "app.py"
    user.write_text(
        textwrap.dedent(
            """
            from fastapi import FastAPI, Request, Response

            from file_storage import ObjectInfo
            from file_storage.fastapi import StorageDep, storage_lifespan, storage_response

            app = FastAPI(lifespan=storage_lifespan)


            @app.get("/files/{key:path}")
            async def download(key: str, request: Request, storage: StorageDep) -> Response:
                info: ObjectInfo = await storage.stat(key)
                size: int = info.size
                return await storage_response(storage, key, request, filename=f"{size}.bin")
            """
        ),
        encoding="utf-8",
    )
    mypy = ["-m", "mypy", "--strict", "--no-incremental", "--python-executable", installed.python]
    result = _run(sys.executable, *mypy, user, cwd=tmp_path)
    assert "Success: no issues found in 1 source file" in result.stdout
    # and a wrong use is caught, so the types really came through
    user.write_text(user.read_text() + "\nwrong: str = ObjectInfo.size\n", encoding="utf-8")
    bad = subprocess.run(
        [sys.executable, *map(str, mypy), str(user)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert 'Incompatible types in assignment (expression has type "int"' in bad.stdout


def test_console_script_runs(installed: Installed, tmp_path: Path) -> None:
    result = _run(installed.scripts / "file-storage", "--help", cwd=tmp_path)
    assert "usage" in result.stdout.lower()


def test_the_wheel_registers_the_builtin_backends(installed: Installed) -> None:
    import configparser
    import zipfile

    (wheel,) = installed.dist.glob("*.whl")
    archive = zipfile.ZipFile(wheel)
    name = next(n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt"))
    parser = configparser.ConfigParser(delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(archive.read(name).decode())
    registered = {key: value.strip() for key, value in parser["file_storage.backends"].items()}
    assert registered == {
        name: f"file_storage.backends._builtin:{name.lower()}"
        for name in ("AZURE", "GCS", "LOCAL", "MEMORY", "S3")
    }


def test_the_wheel_ships_the_conformance_suite_as_a_pytest_plugin(installed: Installed) -> None:
    import configparser
    import zipfile

    (wheel,) = installed.dist.glob("*.whl")
    archive = zipfile.ZipFile(wheel)
    names = archive.namelist()
    assert "file_storage/testing/__init__.py" in names
    assert "file_storage/testing/suite/__init__.py" in names
    assert "file_storage/testing/suite/fixtures.py" in names
    assert not [n for n in names if n.startswith("tests/")]
    name = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    parser = configparser.ConfigParser(delimiters=("=",))
    parser.read_string(archive.read(name).decode())
    assert dict(parser["pytest11"]) == {"file_storage.testing": "file_storage.testing"}
    # the installed suite imports from the wheel alone (nothing from this checkout's tests/)
    suite = "import file_storage.testing.suite as s; print(s.__file__, len(s.__all__))"
    out = _run(installed.python, "-c", suite, cwd=installed.dist).stdout.split()
    assert str(ROOT) not in out[0]
    assert int(out[1]) > 200  # every test, and the fixtures they share
