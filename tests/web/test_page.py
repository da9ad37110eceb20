"""The page in a real browser: Debian's chromium, headless, driven by Playwright (the
Python package only; the browser is the system's, never a download)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.servers.smtp import ACCEPTED, SmtpServer, SmtpTransaction
from tests.web.conftest import WebDaemon

CHROMIUM = "/usr/bin/chromium"

# Records, in the page itself, every value each progress bar and each status cell takes,
# so that the test sees the movement however fast the flush runs.
RECORDER = """() => {
  window.__marker = "no reload";
  window.__bars = [];
  window.__texts = [];
  new MutationObserver(() => {
    document.querySelectorAll('.bar progress').forEach((p) => {
      window.__bars.push([p.closest('.bar').dataset.transport, p.value, p.max]);
    });
    const row = document.querySelector('#status-rows tr[data-name="out"]');
    if (row) window.__texts.push(row.querySelector('.bits').textContent);
  }).observe(document.body,
             {subtree: true, childList: true, attributes: true, characterData: true});
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing: scripts/install-servers installs chromium")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


def _slow_accept(_transaction: SmtpTransaction) -> str:
    time.sleep(0.05)  # a little time per message, so the bars have values between 0 and 20
    return ACCEPTED


def test_send_receive_from_the_page(
    web_daemon: WebDaemon, smtp_server: SmtpServer, browser: Browser, artifacts: Path
) -> None:
    """20 queued messages; a click on Send/Receive; without a reload the progress bar
    moves through the messages, the transport's status row changes and comes back, the
    summary counts 20 sent, the queue empties and the server has the 20 messages."""
    web_daemon.submit(20)
    smtp_server.set_data_answer(_slow_accept)
    page: Page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors: list[str] = []
    page.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(web_daemon.base_url + "/")
    page.wait_for_selector("#live.on")
    page.wait_for_selector('.count[data-count="pending"]:has-text("(20)")')
    assert page.locator("#queue tbody tr").count() == 20
    page.evaluate(RECORDER)
    page.click("#send-receive")
    page.wait_for_selector('#flush-summary[data-sent="20"]', timeout=60_000)
    page.wait_for_selector("#queue td.empty")
    assert page.evaluate("window.__marker") == "no reload"
    values = {value for name, value, _max in page.evaluate("window.__bars") if name == "out"}
    assert len(values) >= 5, values  # it moved, not jumped from nothing to full
    bits = page.evaluate("window.__texts")  # the row's bits, as shown at each change
    assert any("STATUS_OUTBOUND_FLUSH" in shown for shown in bits), bits
    assert "STATUS_OUTBOUND_FLUSH" not in page.text_content('#status-rows tr[data-name="out"]')
    assert "20 sent" in page.text_content("#flush-summary")
    assert len(smtp_server.messages) == 20
    assert page.locator('.bar[data-transport="out"] progress').get_attribute("value") == "1"
    page.click('.tab[data-state="sent"]')
    page.wait_for_selector('#queue .queue[data-state="sent"]')
    assert page.locator("#queue tbody tr").count() == 20
    page.wait_for_selector("#flushes td:has-text('out: sent 20')")
    page.screenshot(path=str(artifacts / "web-page.png"), full_page=True)
    assert errors == []  # nothing refused by the page's security policy, no script error
    page.close()


def test_queue_actions_and_phone_width(
    web_daemon: WebDaemon, browser: Browser, artifacts: Path
) -> None:
    """On a phone-sized screen the page fits the width; Hold on a queued message moves it
    to the held tab, Release brings it back."""
    web_daemon.submit(3, subject="phone")
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(web_daemon.base_url + "/")
    page.wait_for_selector("#queue tbody tr[data-entry]")
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], width
    first = page.locator("#queue tbody tr[data-entry]").first
    entry = first.get_attribute("data-entry")
    first.locator('button[data-action="hold"]').click()
    page.wait_for_selector('.count[data-count="held"]:has-text("(1)")')
    page.click('.tab[data-state="held"]')
    row = page.locator(f'#queue tr[data-entry="{entry}"]')
    row.wait_for()
    row.locator('button[data-action="release"]').click()
    page.wait_for_selector('.count[data-count="held"]:has-text("(0)")')
    page.screenshot(path=str(artifacts / "web-page-phone.png"), full_page=True)
    page.close()
