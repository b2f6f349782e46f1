"""A real browser drives the example app (headless Chromium over CDP, real uvicorn):
per-user folders, uploads with a progress bar, the quota meter, downloads named as
uploaded, delete, and uploads the server refuses. Ids local and s3 (moto, or the server
``make test-ceph`` starts).

The size-capped form upload (``#post-upload``, a presigned POST) needs the store to check
the form's policy and, on S3, to send the bucket's CORS headers on its answer to the POST,
or the page cannot read it. The local signed router does both, and so does Ceph RGW
(which refuses a file over the cap with 400 ``EntityTooLarge``). moto stores a form POST
without checking its policy and sends no CORS headers on that answer
(moto/s3/responses.py, _bucket_response_post), so there the form tests skip with the
reason (``s3_needs``; tests/s3util.py), and the cap the form carries is asserted in its
policy instead (tests/integration/test_example_service.py), as
tests/backends/test_presigned_post.py does for the backend itself.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fastapi import FastAPI

from file_storage import StorageBackend
from tests.integration.conftest import Serve, build_example_app

if TYPE_CHECKING:
    from playwright.async_api import Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 20_000
QUOTA = 1_000_000  # per user
MAX_UPLOAD = 600_000
NAME = "Отпуск 2026.mp4"
# what a form upload needs from an S3 server: that it checks the policy (the cap), and
# that its answer to the POST carries the bucket's CORS headers (so the page can read it)
FORM_UPLOAD = ("enforces_post_policy", "cors_on_post")
SETTLED = "#status:is([data-state=done], [data-state=error], [data-state=deleted])"

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} is absent: run scripts/ensure-chromium as root (apt-get install chromium)",
)
pytestmark = needs_chromium


@contextlib.asynccontextmanager
async def chromium_tab(**page_options: Any) -> AsyncIterator[Page]:
    """A fresh page of a headless Chromium (Debian's chromium: no ``playwright install``),
    every wait on it bounded by ``TIMEOUT_MS``; the browser is closed afterwards."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=TIMEOUT_MS
        )
        try:
            tab = await browser.new_page(**page_options)
            tab.set_default_timeout(TIMEOUT_MS)
            yield tab
        finally:
            await browser.close()


@pytest.fixture
def browser_app(monkeypatch: pytest.MonkeyPatch, storage: StorageBackend, base_url: str) -> FastAPI:
    """The example app with a small quota; on S3 it adds the bucket CORS rule for its origin."""
    monkeypatch.setenv("EXAMPLE_SET_BUCKET_CORS", "1")
    monkeypatch.setenv("EXAMPLE_CORS_ORIGINS", base_url)
    monkeypatch.setenv("EXAMPLE_USER_QUOTA_BYTES", str(QUOTA))
    monkeypatch.setenv("EXAMPLE_MAX_UPLOAD_BYTES", str(MAX_UPLOAD))
    return build_example_app()


@pytest.fixture
async def page(serve: Serve, browser_app: FastAPI) -> AsyncIterator[Page]:
    """A fresh Chromium page on the running example app (Debian's chromium: no
    ``playwright install``). Every wait below is on a DOM condition, bounded."""
    base_url = serve(browser_app)
    async with chromium_tab(accept_downloads=True) as tab:
        await tab.goto(f"{base_url}/")
        await tab.locator("#quota-text:has-text('used by demo')").wait_for()  # loaded
        yield tab


async def switch_user(page: Page, user: str) -> None:
    await page.fill("#user", user)
    await page.click("#user-form button")
    await page.locator(f"#quota-text:has-text('used by {user}')").wait_for()


async def upload(page: Page, chosen: Path, button: str) -> tuple[str, str]:
    """Choose ``chosen``, click ``button``; (state, key or the error shown)."""
    await page.set_input_files("#file", str(chosen))
    await page.click(button)
    await page.locator(SETTLED).wait_for()
    status = page.locator("#status")
    state = await status.get_attribute("data-state") or ""
    if state == "done":
        return state, await status.get_attribute("data-key") or ""
    return state, await status.text_content() or ""


async def used(page: Page) -> int:
    return int(await page.locator("#quota-text").get_attribute("data-used") or "-1")


# under the quota, S3 signs no PUT: the page's PUT button sends the capped form there
@pytest.mark.s3_needs(*FORM_UPLOAD)
async def test_upload_with_progress_meter_download_by_name_and_delete(
    page: Page, storage: StorageBackend, tmp_path: Path
) -> None:
    data = os.urandom(400_000)
    chosen = tmp_path / NAME
    chosen.write_bytes(data)
    await switch_user(page, "alice")
    assert await used(page) == 0

    state, key = await upload(page, chosen, "#put-upload")
    assert state == "done", key
    # the bar was fed by xhr.upload.onprogress, up to the whole file
    progress = page.locator("#progress")
    assert await progress.get_attribute("data-percent") == "100"
    assert int(await progress.get_attribute("data-events") or "0") >= 1
    assert await used(page) == len(data)  # the meter moved
    link = page.locator(f'#files tr[data-key="{key}"] a.download')
    assert await link.text_content() == NAME

    async with page.expect_download() as downloading:
        await link.click()
    download = await downloading.value
    assert download.suggested_filename == NAME  # from the Content-Disposition
    assert Path(await download.path()).read_bytes() == data

    assert key.startswith("users/alice/")
    assert key.endswith(".mp4")
    assert await storage.load(key) == data

    # another user sees none of it
    await switch_user(page, "bob")
    assert await page.locator("#files tr").count() == 0
    assert await used(page) == 0
    await switch_user(page, "alice")
    await page.locator(f'#files tr[data-key="{key}"]').wait_for()

    await page.click(f'#files tr[data-key="{key}"] button.delete')
    await page.locator("#status[data-state=deleted]").wait_for()
    assert await page.locator("#files tr").count() == 0
    assert await used(page) == 0  # the meter dropped
    assert await storage.list_files("users/alice") == []


async def test_upload_over_the_cap_is_refused_by_the_server_and_stores_nothing(
    page: Page, storage: StorageBackend, tmp_path: Path
) -> None:
    chosen = tmp_path / "Too big.bin"
    chosen.write_bytes(os.urandom(MAX_UPLOAD + 1))
    await switch_user(page, "carol")
    state, message = await upload(page, chosen, "#put-upload")
    assert state == "error"
    assert "413" in message
    assert await storage.list_files() == []
    assert await used(page) == 0


@pytest.mark.s3_needs(*FORM_UPLOAD)
async def test_form_upload_under_the_cap_lands_with_progress_and_name(
    page: Page, storage: StorageBackend, tmp_path: Path
) -> None:
    data = os.urandom(MAX_UPLOAD // 2)
    chosen = tmp_path / "Scan é.pdf"
    chosen.write_bytes(data)
    state, key = await upload(page, chosen, "#post-upload")
    assert state == "done", key
    assert await page.locator("#progress").get_attribute("data-percent") == "100"
    assert await page.locator(f'#files tr[data-key="{key}"] a.download').text_content() == (
        "Scan é.pdf"
    )
    assert key.startswith("users/demo/")
    assert await storage.load(key) == data
    assert (await storage.stat(key)).content_type == "application/pdf"
    assert await used(page) == len(data)


@pytest.mark.s3_needs(*FORM_UPLOAD)
async def test_form_upload_over_the_cap_is_refused_by_the_store(
    page: Page, storage: StorageBackend, tmp_path: Path
) -> None:
    # the app hands out the form; the store refuses the file: the signed router with a
    # 413, S3 with a 400 EntityTooLarge (its XML error, which the page puts in words)
    chosen = tmp_path / "Too big.bin"
    chosen.write_bytes(os.urandom(MAX_UPLOAD + 1))
    state, message = await upload(page, chosen, "#post-upload")
    assert state == "error"
    assert f"the file is larger than the {MAX_UPLOAD} bytes this form allows" in message
    assert await storage.list_files() == []
    assert await used(page) == 0


async def test_the_list_pages_with_show_more(page: Page, storage: StorageBackend) -> None:
    # 25 files (the page shows 20 at a time), and a neighbour's that never shows
    keys = [f"users/dave/2026/01/{i:02d}.txt" for i in range(25)]
    for key in keys:
        await storage.save(key, b"x")
    await storage.save("users/dave2/a.txt", b"x")
    await switch_user(page, "dave")
    rows = page.locator("#files tr")
    assert await rows.count() == 20
    await page.click("#more")
    await page.locator("#files tr:nth-child(25)").wait_for()
    assert await page.locator("#more").is_hidden()
    assert [await row.get_attribute("data-key") for row in await rows.all()] == keys
