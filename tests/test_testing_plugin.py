"""The file_storage.testing plugin from a third party's side: a project of its own (pytester)
defines ``backend``, imports the suite, and pytest passes, fails or skips as it should.

pytest loads the plugin from its ``pytest11`` entry point, as in any project where
file_storage is installed: these projects never name it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest_plugins = ["pytester"]

SUITE = "from file_storage.testing.suite import *  # noqa: F403\n"

# what a user's pyproject holds: pytest-asyncio in one mode, warnings as errors
CONFIG = """
[tool.pytest.ini_options]
asyncio_mode = "{mode}"
asyncio_default_fixture_loop_scope = "function"
filterwarnings = ["error"]
"""

MEMORY_BACKEND = """
import pytest

from file_storage import MemoryStorageBackend


@pytest.fixture
def backend() -> MemoryStorageBackend:
    return MemoryStorageBackend()
"""


def _project(pytester: pytest.Pytester, conftest: str, *, mode: str = "auto") -> None:
    pytester.makepyprojecttoml(CONFIG.format(mode=mode))
    pytester.makeconftest(textwrap.dedent(conftest))
    pytester.makepyfile(test_my_backend=SUITE)


def test_a_third_party_backend_passes_the_whole_suite(pytester: pytest.Pytester) -> None:
    _project(pytester, MEMORY_BACKEND)
    result = pytester.runpytest("-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-3000:]
    assert outcomes["passed"] > 500
    assert "skipped" not in outcomes  # lacking nothing, the memory backend skips nothing


def test_the_suite_runs_in_pytest_asyncio_strict_mode(pytester: pytest.Pytester) -> None:
    # strict mode: an async backend fixture is a pytest_asyncio fixture, nothing else changes
    conftest = """
    from collections.abc import AsyncIterator

    import pytest_asyncio

    from file_storage import MemoryStorageBackend


    @pytest_asyncio.fixture
    async def backend() -> AsyncIterator[MemoryStorageBackend]:
        async with MemoryStorageBackend() as opened:
            yield opened
    """
    _project(pytester, conftest, mode="strict")
    # a cross-section: plain and hypothesis tests, fixtures of the suite, streams, versions
    args = ("-p", "no:cacheprovider", "-k", "key or filled or stream or version or copy")
    result = pytester.runpytest(*args)
    outcomes = result.parseoutcomes()
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-3000:]
    assert outcomes["passed"] > 100
    assert "skipped" not in outcomes


def test_a_backend_breaking_the_contract_fails_the_suite(pytester: pytest.Pytester) -> None:
    conftest = """
    import pytest

    from file_storage import MemoryStorageBackend


    class Corrupting(MemoryStorageBackend):
        async def _load(self, key: str) -> bytes:
            return (await super()._load(key))[:-1]  # loses the last byte


    @pytest.fixture
    def backend() -> Corrupting:
        return Corrupting()
    """
    _project(pytester, conftest)
    result = pytester.runpytest("-p", "no:cacheprovider", "-k", "save or load")
    outcomes = result.parseoutcomes()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert outcomes["failed"] > 10
    result.stdout.fnmatch_lines(["FAILED test_my_backend.py::test_save_overwrites*"])


def test_what_a_backend_lacks_is_skipped_with_the_reason(pytester: pytest.Pytester) -> None:
    conftest = MEMORY_BACKEND + textwrap.dedent(
        """

        @pytest.fixture
        def backend_lacks() -> set[str]:
            return {"versions", "object_headers"}
        """
    )
    _project(pytester, conftest)
    result = pytester.runpytest("-p", "no:cacheprovider", "-rs", "-k", "version or header")
    outcomes = result.parseoutcomes()
    assert result.ret == pytest.ExitCode.OK
    assert outcomes["skipped"] >= 25
    # the one versions test that needs no versioning still runs: each object is "null"
    assert outcomes["passed"] >= 1
    result.stdout.fnmatch_lines(
        [
            "SKIPPED * the backend keeps no prior versions * (lacks versions)",
            "SKIPPED * the backend does not store cache_control and content_disposition"
            " (lacks object_headers)",
        ],
        consecutive=False,
    )


def test_an_unknown_feature_is_an_error_not_a_skip(pytester: pytest.Pytester) -> None:
    conftest = MEMORY_BACKEND + textwrap.dedent(
        """

        @pytest.fixture
        def backend_lacks() -> set[str]:
            return {"versioning"}  # a typo: must not silently run or skip
        """
    )
    _project(pytester, conftest)
    result = pytester.runpytest("-p", "no:cacheprovider", "-k", "test_overwrite_keeps")
    assert result.ret != pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*unknown backend feature 'versioning'*"])


def test_naming_the_plugin_as_well_as_autoloading_it_is_fine(pytester: pytest.Pytester) -> None:
    # the entry point has the module's name: -p and pytest_plugins find it registered
    _project(pytester, 'pytest_plugins = ["file_storage.testing"]\n' + MEMORY_BACKEND)
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "-p", "file_storage.testing", "-k", "stat"
    )
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-3000:]
    assert result.parseoutcomes()["passed"] > 10


def test_the_plugin_changes_nothing_in_a_project_not_using_it(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml(
        CONFIG.format(mode="strict") + 'addopts = "--strict-markers --strict-config"\n'
    )
    pytester.makepyfile(
        test_app="""
        import pytest


        def test_loaded(request: pytest.FixtureRequest) -> None:
            assert request.config.pluginmanager.has_plugin("file_storage.testing")


        def test_backend_is_not_required() -> None:
            assert True


        @pytest.mark.backend_needs("versions")
        def test_marked_but_lacking_nothing() -> None:
            assert True
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_the_suite_without_its_extra_names_the_pip_command() -> None:
    code = textwrap.dedent(
        """
        import importlib.util

        real = importlib.util.find_spec
        importlib.util.find_spec = lambda name, *a: None if name == "hypothesis" else real(name, *a)
        try:
            import file_storage.testing.suite
        except ImportError as exc:
            print(exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == (
        "the conformance suite needs hypothesis: pip install 'file_storage[testing]'"
    )
