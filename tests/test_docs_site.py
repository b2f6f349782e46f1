"""The generated parts of the documentation site match the code they come from."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest
from pydantic_settings import EnvSettingsSource

from file_storage import StorageSettings

ROOT = Path(__file__).resolve().parent.parent


def _hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "scripts/docs_hooks.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _table_variables() -> list[str]:
    return re.findall(r"^\| `(STORAGE_\w+)` \|", _hooks().settings_tables(), re.M)


def test_configuration_page_has_the_generated_table() -> None:
    page = (ROOT / "docs/configuration.md").read_text(encoding="utf-8")
    rendered = _hooks().on_page_markdown(page)
    assert "<!-- settings-table -->" in page
    assert "| `STORAGE_S3_MAX_CONCURRENCY` | integer, >= 1 and <= 64 | `8` |" in rendered


def test_configuration_table_lists_every_settings_field() -> None:
    fields = ["type"]
    for section in ("local", "s3", "gcs", "azure", "quota", "expire"):
        model = getattr(StorageSettings(), section)
        fields += [f"{section}_{name}" for name in type(model).model_fields]
    assert sorted(_table_variables()) == sorted(f"STORAGE_{f.upper()}" for f in fields)


@pytest.mark.parametrize("variable", _table_variables())
def test_each_documented_variable_is_the_one_settings_read(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, "sentinel")
    raw = EnvSettingsSource(StorageSettings)()  # what the environment gives, per field
    section, _, name = variable.removeprefix("STORAGE_").lower().partition("_")
    found = raw[section] if not name else raw.get(section, {}).get(name)
    assert found == "sentinel"


def test_a_description_naming_another_variable_fails_the_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hooks = _hooks()
    field = StorageSettings.model_fields["type"]
    monkeypatch.setattr(field, "description", "STORAGE_KIND: which backend")
    with pytest.raises(ValueError, match="STORAGE_TYPE: its description names STORAGE_KIND"):
        hooks.settings_tables()


def test_sphinx_roles_of_docstrings_show_as_plain_code() -> None:
    html = "raises :class:<code>StorageError</code>; see :meth:<code>stat</code>"
    rendered = _hooks().on_page_content(html)
    assert rendered == "raises <code>StorageError</code>; see <code>stat</code>"


def test_the_api_reference_covers_every_public_name() -> None:
    import file_storage

    page = (ROOT / "docs/api.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^::: file_storage\.(\w+)", page, re.M))
    missing = [
        name
        for name in file_storage.__all__
        if name not in documented
        and not (
            getattr(file_storage, name).__module__ == "file_storage.errors"
            and "errors" in documented
        )
    ]
    assert missing == []
    assert "fastapi" in documented  # the whole module, every name of its __all__


def test_the_contract_imports_every_public_name() -> None:
    import file_storage

    page = (ROOT / "docs/reference.md").read_text(encoding="utf-8")
    block = re.search(r"^from file_storage import \((.*?)^\)", page, re.S | re.M)
    assert block is not None
    assert re.findall(r"\w+", block.group(1)) == sorted(file_storage.__all__)


_LINK = re.compile(r"\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _anchors(page: Path) -> set[str]:
    from markdown.extensions.toc import slugify

    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    headings = re.findall(r"^#{1,6} (.+?)\s*$", text, re.M)
    return {slugify(heading.replace("`", ""), "-") for heading in headings}


def test_readme_links_lead_to_files_and_headings_that_exist() -> None:
    # README.md is outside the site, so `mkdocs build --strict` does not check its links
    readme = ROOT / "README.md"
    broken = []
    for target in _LINK.findall(_FENCE.sub("", readme.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):
            continue  # an absolute URL
        path, _, anchor = target.partition("#")
        page = (ROOT / path) if path else readme
        if not page.is_file() or (anchor and anchor not in _anchors(page)):
            broken.append(target)
    assert broken == []


# a plugin's own variables (docs/plugins.md's example backend), not file_storage's
_NOT_OURS = ("STORAGE_DICT",)


def test_every_variable_the_docs_name_is_one_the_settings_read() -> None:
    # a renamed or mistyped variable in a guide is silently ignored by StorageSettings
    # (extra="ignore"), so a reader copying it would configure nothing
    known = set(_table_variables())
    sections = {name.rsplit("_", 1)[0] for name in known} | {
        f"STORAGE_{section.upper()}" for section in StorageSettings.model_fields
    }
    pages = [ROOT / "README.md", ROOT / ".env.example", *sorted((ROOT / "docs").glob("*.md"))]
    unknown = set()
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for name in re.findall(r"(?<![A-Z0-9_])STORAGE_[A-Z0-9_]*[A-Z0-9]", text):
            if name not in known and name not in sections and not name.startswith(_NOT_OURS):
                unknown.add(f"{page.name}: {name}")
    assert sorted(unknown) == []
