"""Fixtures of the browser tests: Debian's Chromium, headless, driven by Playwright for Python
through its own binary (``executable_path``): Playwright downloads no browser here.

These tests run only with `-m browser` (`make test-browser` installs Chromium and Playwright
when missing, then runs them); `make test` deselects them."""
import os
import shutil
from pathlib import Path

import pytest
from conftest import ROOT

CHROMIUM = os.environ.get('GUNET_CHROMIUM', '/usr/bin/chromium')
# No sandbox (root in a container), no GPU, and nothing that talks to the network by itself.
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync']
# Where the screenshots are copied, to look at after the run (results/ is not in git).
SCREENSHOTS = os.path.join(ROOT, 'results', 'browser_tests')


def pytest_configure(config):
    config.addinivalue_line('markers', 'browser: needs Chromium and Playwright (make test-browser)')


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config, items):
    # Everything in this folder needs the browser, marked or not: keep it out of `make test`.
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope='session')
def chromium(tmp_path_factory):
    """A headless Chromium with a fresh profile (--user-data-dir, which Playwright sets from
    the persistent context's folder); fails, not skips, when Chromium or Playwright is missing."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f'no Chromium at {CHROMIUM}: `make test-browser` installs Debian\'s chromium')
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail('Playwright for Python is missing: `make test-browser` installs it (pip install -e .[browser])')
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp('chromium-profile')), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={'width': 1400, 'height': 900}, offline=True)
        try:
            yield context
        finally:
            context.close()


class OpenedPage:
    """A page opened from file:// that records console errors, uncaught exceptions, failed
    loads and any request that is not for a local file."""

    def __init__(self, context, path):
        self.problems, self.warnings = [], []
        self.page = page = context.new_page()
        page.on('console', self._console)
        page.on('pageerror', lambda err: self.problems.append(f'uncaught: {err}'))
        page.on('requestfailed', lambda req: self.problems.append(f'failed to load {req.url}: {req.failure}'))
        page.on('request', lambda req: None if req.url.startswith('file://') else
                self.problems.append(f'not a local file: {req.url}'))
        page.goto(Path(path).as_uri(), wait_until='load')

    def _console(self, message):
        if message.type == 'error':
            self.problems.append(f'console error: {message.text}')
        elif message.type == 'warning':
            self.warnings.append(message.text)

    def load_all_images(self):
        """Loads the lazy images too; returns how many did not decode."""
        return self.page.evaluate('''async () => {
            const images = Array.from(document.images);
            images.forEach(img => { img.loading = 'eager'; });
            await Promise.all(images.map(img => img.decode().catch(() => null)));
            return images.filter(img => !(img.complete && img.naturalWidth > 0)).map(img => img.src);
        }''')

    def screenshot(self, tmp_path, name):
        path = os.path.join(str(tmp_path), name)
        self.page.screenshot(path=path)
        os.makedirs(SCREENSHOTS, exist_ok=True)
        kept = shutil.copy(path, os.path.join(SCREENSHOTS, name))
        print(f'screenshot: {kept}')
        return kept


@pytest.fixture
def open_page(chromium):
    pages = []

    def opener(path):
        pages.append(OpenedPage(chromium, path))
        return pages[-1]

    yield opener
    for opened in pages:
        opened.page.close()
