"""The web page in a real browser: ``melanoscan serve`` started here, driven by Chromium.

Needs Debian's Chromium at /usr/bin/chromium (``.ci/run`` installs it). Without it the test is
skipped on a developer's machine, and fails under CI so that a broken install cannot pass.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from PIL import Image

from melanoscan.bundle import default_bundle_path
from melanoscan.inference.predictor import Predictor
from melanoscan.serving.background import serve_in_background
from tests.conftest import EXAMPLES, text_page
from tests.serving.conftest import with_alert_threshold

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
IMAGES = [EXAMPLES / "melanoma", EXAMPLES / "nevus"]
pytestmark = pytest.mark.slow  # a server and a browser per module

if not CHROMIUM.exists():
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing: .ci/run must install Debian's chromium")
    pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def images() -> list[Path]:
    return [sorted(folder.glob("*.jpg"))[0] for folder in IMAGES]


@pytest.fixture(scope="module")
def bundle(images: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped model, with its alert threshold between the two images' melanoma scores.

    Exactly one of the two cards must then show the alert, whatever the model's accuracy.
    """
    scores = sorted(p.melanoma_probability for p in Predictor().predict(images))
    assert scores[0] < scores[1], "the two example images score the same"
    directory = tmp_path_factory.mktemp("served") / "bundle"
    return with_alert_threshold(default_bundle_path(), directory, sum(scores) / 2)


@pytest.fixture(scope="module")
def server(bundle: Path) -> Iterator[str]:
    with serve_in_background(bundle) as url:
        yield url


@pytest.fixture(scope="module")
def page(server: str) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(server)
        yield page
        browser.close()


def test_upload_shows_cards_with_the_alert(
    page, server: str, images: list[Path], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#model-info")).to_contain_text("alert at probability")
    expect(page.locator("#notice")).to_contain_text("not a medical device")
    page.set_input_files("#file-input", [str(p) for p in images])
    cards = page.locator("#results .card")
    expect(cards).to_have_count(2, timeout=60_000)
    expect(page.locator("#status")).to_contain_text("2 image(s) analysed, 1 melanoma alert(s)")

    files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in images]
    api = httpx2.post(f"{server}/v1/predict", files=files, timeout=60).json()["predictions"]
    ranked = sorted(api, key=lambda p: p["melanoma_probability"], reverse=True)
    assert [cards.nth(i).get_attribute("data-filename") for i in range(2)] == [
        p["path"] for p in ranked
    ]
    top, bottom = cards.nth(0), cards.nth(1)
    expect(top.locator(".alert-banner")).to_contain_text("Melanoma alert")
    expect(bottom.locator(".alert-banner")).to_have_count(0)
    # An alert leads with "melanoma suspected", whatever the top class.
    expect(top.locator(".headline")).to_have_text("melanoma suspected")
    expect(bottom.locator(".headline")).to_have_text(ranked[1]["headline"])
    for card, result in ((top, ranked[0]), (bottom, ranked[1])):
        expect(card.locator(".predicted-class")).to_have_text(
            result["predicted_class"].replace("_", " "))
        expect(card.locator(".bars li")).to_have_count(len(result["probabilities"]))
        overlay = card.locator("img.gradcam")
        expect(overlay).to_have_count(1)
        assert overlay.evaluate("img => img.complete && img.naturalWidth") > 0

    screenshot = page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert screenshot[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_gate_refuses_a_blank_image_and_a_text_page_on_the_page(
    page, images: list[Path], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    flat, text = tmp_path / "blank.png", tmp_path / "page.png"
    Image.new("RGB", (256, 256), (200, 150, 120)).save(flat)
    text_page((256, 320)).save(text)
    page.set_input_files("#file-input", [str(images[0]), str(flat), str(text)])
    expect(page.locator("#status")).to_contain_text("2 not analysed by the gate",
                                                    timeout=60_000)
    flagged = page.locator("#results .card.flagged")
    expect(flagged).to_have_count(2)
    banner = '.card.flagged[data-filename="{}"] .verdict-banner'
    expect(page.locator(banner.format("blank.png"))).to_contain_text(
        "Image too poor to read: blank")
    # A white page is refused as over-exposed or as not dermoscopy: either way, with a reason.
    expect(page.locator(banner.format("page.png"))).to_contain_text("Not analysed")
    expect(flagged.locator(".bars")).to_have_count(0)  # no class, no probabilities
    expect(flagged.locator(".alert-banner")).to_have_count(0)
    # The dermoscopy image is read and ranked first; the refused ones follow.
    expect(page.locator("#results .card").nth(0)).to_have_attribute("data-filename",
                                                                    images[0].name)


def test_a_file_that_is_not_an_image_is_refused_on_the_page(page, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    page.set_input_files("#file-input", [str(text)])
    expect(page.locator("#status")).to_contain_text("Refused", timeout=30_000)
    expect(page.locator("#results .card.refused")).to_have_count(1)
