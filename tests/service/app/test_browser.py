"""The review page in Debian's Chromium (headless, through Playwright): sign in, review three
items with the keyboard, skip one with `s`, and check the database. Saves a screenshot of the
review page (to $HOWSURE_SCREENSHOTS/review_page.png as well when that is set)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TEXTS = [
    "A gorgeous, witty, seductive movie that never once talks down to its audience.",
    "The worst film of the year: dull, stupid and far too long.",
    "Not sure what I expected, but the ending <b>really</b> worked for me.",
    "An item to skip for now.",
]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():  # a failure in CI, as every skip there (tests/conftest.py)
        pytest.skip(f"{CHROMIUM} is not installed (.ci/system-deps installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def test_review_three_items_with_the_keyboard(browser, live_service, tmp_path):
    env, url = live_service(threshold=None)  # every item goes to review
    items = env.classify(TEXTS)
    ids = [item["item_id"] for item in items]

    page = browser.new_page(viewport={"width": 1000, "height": 720})
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{url}/review")
    assert page.url.endswith("/login")
    page.fill("#token", env.tokens["rita"])
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url.endswith("/review")

    # The first item, with a label picked by key: what the screenshot shows.
    assert page.inner_text("#item-id") == str(ids[0])
    assert page.inner_text("#item-text") == TEXTS[0]
    assert "Model suggests" in page.inner_text("#suggestion")
    assert page.inner_text("#queue-length") == "3" and page.inner_text("#my-count") == "0"
    page.keyboard.press("2")
    assert page.is_checked("input[name=label][data-key='2']")
    assert "picked" in page.get_attribute("label.choice:nth-of-type(2)", "class")
    shot = tmp_path / "review_page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("HOWSURE_SCREENSHOTS"):
        shutil.copy(shot, Path(os.environ["HOWSURE_SCREENSHOTS"]) / "review_page.png")

    chosen = {}
    for n, (item_id, key) in enumerate(zip(ids[:3], ["2", "1", "2"])):
        assert page.inner_text("#item-id") == str(item_id)
        page.keyboard.press(key)
        chosen[item_id] = page.get_attribute(f"input[name=label][data-key='{key}']", "value")
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert page.inner_text("#flash") == f"Saved item {item_id}."
        assert page.inner_text("#my-count") == str(n + 1)
    # The item with HTML in it showed as text.
    assert page.inner_text("#item-id") == str(ids[3])
    with page.expect_navigation():
        page.keyboard.press("s")
    assert "Skipped item" in page.inner_text("#flash")
    # Enter with no label picked does not submit.
    page.keyboard.press("Enter")
    page.wait_for_timeout(200)
    assert "needs-label" in page.get_attribute("#review-form", "class")
    assert not errors, errors

    for item_id, label in chosen.items():
        review = env.store.get_review(item_id)
        assert (review.reviewer, review.label) == ("rita", label)
        assert env.store.get_item(item_id).status == "reviewed"
    assert env.store.get_review(ids[3]) is None
    assert [e.action for e in env.store.events(item_id=ids[3], action="skip")] == ["skip"]
    assert env.store.reviewer_count("rita") == 3
    page.close()


def test_html_in_an_item_shows_as_text(browser, live_service):
    env, url = live_service(threshold=None)
    env.classify(["<script>document.title='pwned'</script><b>bold?</b>"])
    page = browser.new_page()
    page.goto(f"{url}/login")
    page.fill("#token", env.tokens["rex"])
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.inner_text("#item-text") == "<script>document.title='pwned'</script><b>bold?</b>"
    assert page.title() == "Review · howsure"
    assert page.locator("#item-text b").count() == 0
    page.close()
