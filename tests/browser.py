"""Chromium for the UI tests: Debian's chromium driven by Playwright, one browser per test module
(``browser``, in ``tests/conftest.py``), a fresh 1280x800 context per test (``page``) whose console errors and
uncaught page errors are collected (a Content-Security-Policy violation shows up there), and screenshots.

``CMF_UI_SCREENSHOTS=DIR`` also writes the screenshots named in :data:`README_SHOTS` into DIR: the README's
images (``docs/images``) are made that way.
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, List

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 15_000
README_SHOTS = {"pipelines", "executions", "execution", "lineage", "compare", "charts", "lineage-aggregated"}


def need_chromium() -> None:
    """Skip the calling test module when there is no chromium (``scripts/test.sh`` installs it)."""
    if not CHROMIUM.exists():
        pytest.skip(f"the browser tests need Debian's chromium at {CHROMIUM} (scripts/test.sh installs it)",
                    allow_module_level=True)


def launch() -> Iterator["Browser"]:
    """The browser of the ``browser`` fixture, closed at the end (playwright is imported only when one is wanted)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def new_page(browser: "Browser", **options) -> Iterator["Page"]:
    """A page in a fresh context (1280x800 unless ``options`` say otherwise); ``page.errors`` collects its console
    errors and uncaught page errors, each as "URL: text"."""
    context = browser.new_context(**{"viewport": {"width": 1280, "height": 800}, **options})
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    errors: List[str] = []
    tab.on("console", lambda m: errors.append(f"{tab.url}: {m.text}") if m.type == "error" else None)
    tab.on("pageerror", lambda e: errors.append(f"{tab.url}: uncaught {e}"))
    tab.errors = errors  # type: ignore[attr-defined]
    try:
        yield tab
    finally:
        context.close()


#: ``with opened(browser, **options) as page:`` - a page of :func:`new_page` for part of a test.
opened = contextmanager(new_page)


def assert_clean(page: "Page", *statuses: int) -> None:
    """No console or page error so far, but the browser's note about the document's own expected status."""
    allowed = [re.compile(rf"Failed to load resource: the server responded with a status of {s}\b") for s in statuses]
    errors = [e for e in page.errors if not any(a.search(e) for a in allowed)]  # type: ignore[attr-defined]
    assert not errors, "console or page errors:\n" + "\n".join(errors)


def shoot(page: "Page", folder: Path, name: str, full_page: bool = False) -> None:
    """A screenshot into ``folder`` (a test's tmp dir, to look at); the README's ones also into
    $CMF_UI_SCREENSHOTS when set."""
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=full_page)
    target = os.environ.get("CMF_UI_SCREENSHOTS")
    if target and name in README_SHOTS:
        Path(target).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(target) / f"{name}.png"), full_page=full_page)
