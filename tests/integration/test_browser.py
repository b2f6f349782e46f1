"""A real browser uploads through the example page (headless Chromium): a presigned PUT,
and a size-capped form POST that the server refuses when the file is too large."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fastapi import FastAPI

from file_storage import StorageBackend
from tests.integration.conftest import Serve, build_example_app

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

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} is absent: run scripts/ensure-chromium as root (apt-get install chromium)",
)


@pytest.fixture
def browser_app(monkeypatch: pytest.MonkeyPatch, storage: StorageBackend, base_url: str) -> FastAPI:
    """The example service; on S3 it adds the bucket CORS rule for its own origin."""
    monkeypatch.setenv("EXAMPLE_SET_BUCKET_CORS", "1")
    monkeypatch.setenv("EXAMPLE_CORS_ORIGINS", base_url)
    return build_example_app()


@pytest.fixture
def local_browser_app_capped(
    monkeypatch: pytest.MonkeyPatch, local_storage: StorageBackend
) -> FastAPI:
    """The example service on the local backend, forms capped at FORM_CAP bytes.

    Local only: moto stores a form POST but neither checks its policy nor sends CORS
    headers on that response (moto/s3/responses.py, _bucket_response_post), so a page
    cannot read its answer. tests/integration/test_presigned_post.py posts to moto from
    Python, and tests/backends/test_presigned_post.py checks the S3 policy's cap.
    """
    monkeypatch.setenv("EXAMPLE_MAX_UPLOAD_BYTES", str(FORM_CAP))
    return build_example_app()


async def test_browser_uploads_a_file_straight_to_storage_with_a_presigned_put(
    serve: Serve, browser_app: FastAPI, storage: StorageBackend, tmp_path: Path
) -> None:
    # Debian's chromium, driven over CDP; `playwright install` is never needed
    from playwright.async_api import async_playwright

    data = os.urandom(300_000)
    chosen = tmp_path / "Holiday photo.png"
    chosen.write_bytes(data)
    base_url = serve(browser_app)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=TIMEOUT_MS
        )
        try:
            page = await browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            await page.goto(f"{base_url}/")
            await page.set_input_files("#file", str(chosen))
            await page.click("#put-upload")
            status = page.locator("#status")
            await page.locator("#status:is([data-state=done], [data-state=error])").wait_for()
            assert await status.get_attribute("data-state") == "done", await status.text_content()
            key = await status.get_attribute("data-key")
            assert key is not None
            # the refreshed list links to the new file
            await page.locator(f'#files a[href="/api/files/{key}"]').wait_for()
        finally:
            await browser.close()

    assert key.startswith("uploads/")
    assert key.endswith(".png")
    assert await storage.load(key) == data
    assert (await storage.stat(key)).content_type == "image/png"


FORM_CAP = 200_000


async def _upload_in_browser(base_url: str, chosen: Path, button: str) -> tuple[str, str]:
    """Choose ``chosen`` on the example page, click ``button``; (state, key or message)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=TIMEOUT_MS
        )
        try:
            page = await browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            await page.goto(f"{base_url}/")
            await page.set_input_files("#file", str(chosen))
            await page.click(button)
            status = page.locator("#status")
            await page.locator("#status:is([data-state=done], [data-state=error])").wait_for()
            state = await status.get_attribute("data-state") or ""
            if state == "done":
                key = await status.get_attribute("data-key") or ""
                await page.locator(f'#files a[href="/api/files/{key}"]').wait_for()
                return state, key
            return state, await status.text_content() or ""
        finally:
            await browser.close()


async def test_browser_form_upload_under_the_cap_lands(
    serve: Serve, local_browser_app_capped: FastAPI, local_storage: StorageBackend, tmp_path: Path
) -> None:
    data = os.urandom(FORM_CAP // 2)
    chosen = tmp_path / "Small scan.pdf"
    chosen.write_bytes(data)
    state, key = await _upload_in_browser(serve(local_browser_app_capped), chosen, "#post-upload")
    assert state == "done", key
    assert key.startswith("uploads/")
    assert key.endswith(".pdf")
    assert await local_storage.load(key) == data
    assert (await local_storage.stat(key)).content_type == "application/pdf"


async def test_browser_form_upload_over_the_cap_is_refused_by_the_server(
    serve: Serve, local_browser_app_capped: FastAPI, local_storage: StorageBackend, tmp_path: Path
) -> None:
    chosen = tmp_path / "Too big.bin"
    chosen.write_bytes(os.urandom(FORM_CAP + 1))
    state, message = await _upload_in_browser(
        serve(local_browser_app_capped), chosen, "#post-upload"
    )
    assert state == "error"
    assert "413" in message
    assert await local_storage.list_files("uploads") == []
