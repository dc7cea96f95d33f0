"""A visitor's first minute, in a real browser (Debian's chromium driven by Playwright).

The page opens on explained examples without a click and without a request leaving the host,
its headings in a font the browser loaded; a concepts-tab example fills its prompts and
explains; bad input gives a message and never a red "Error" badge; downloads never outlive
the panels they were written for; the colour map re-colours from the cache.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

import pytest
from appserver import REPO_ROOT, running_server
from test_app_browser import CHROMIUM, _image_src, _pixels, _wait_text, browser  # noqa: F401

from app.explain.service import ExplanationService

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium"
    ),
]

#: The red badge Gradio's status tracker puts on an output whose event failed.
BADGES_JS = "() => [...document.querySelectorAll('span.error')].filter(e => e.offsetParent).length"


@pytest.fixture(scope="module")
def server():
    with running_server() as srv:
        assert srv.demo.serving.landing.values("classifier") is not None  # waits for it
        yield srv


@pytest.fixture
def visit(browser, server):  # noqa: F811 - the shared chromium fixture
    contexts = []

    def open_page(requests: list[str] | None = None):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(45_000)
        if requests is not None:
            page.on("request", lambda r: requests.append(r.url))
        page.goto(server.url)
        page.locator("#clf-image").wait_for()
        return page

    yield open_page
    for context in contexts:
        context.close()


def _badges(page) -> int:
    return page.evaluate(BADGES_JS)


def _concepts(page) -> None:
    page.get_by_role("tab", name="CLIP concepts").click()
    page.locator("#con-target").wait_for()


def _warned(page, text: str) -> None:
    """A warning toast containing ``text`` appears, and no output carries an error badge."""
    page.locator(".toast-body", has_text=text).first.wait_for()
    page.wait_for_timeout(300)
    assert _badges(page) == 0
    for close in page.locator(".toast-close").all():
        close.click()


def test_page_opens_on_both_explained_examples_offline_with_a_shipped_font(
    visit, server, monkeypatch
):
    runs = []
    original = ExplanationService._prepare
    monkeypatch.setattr(
        ExplanationService, "_prepare", lambda *a, **k: runs.append(1) or original(*a, **k)
    )
    requests: list[str] = []
    page = visit(requests)
    _image_src(page, "clf-cam")
    _image_src(page, "clf-finer")
    _wait_text(page, "clf-used", "reference 1")
    if os.environ.get("FINERCAM_UPDATE_SCREENSHOT") == "1":  # the README's: the landing page
        page.evaluate("() => document.fonts.ready.then(() => true)")
        page.wait_for_timeout(500)
        page.screenshot(path=str(REPO_ROOT / "docs" / "screenshot.png"), full_page=True)
    _concepts(page)
    _image_src(page, "con-finer")
    _wait_text(page, "con-scores", "contrast 1")
    page.evaluate("() => document.fonts.ready.then(() => true)")
    page.wait_for_timeout(500)

    host = urlparse(server.url).netloc
    off_host = [u for u in requests if urlparse(u).scheme in ("http", "https", "ws", "wss")
                and urlparse(u).netloc != host]  # fmt: skip
    assert requests and off_host == []
    assert runs == []  # served from the landing cache: the page load ran no model
    fonts = page.evaluate(
        """() => document.fonts.ready.then(() => ({
            loaded: [...document.fonts].filter(f => f.status === 'loaded').map(f => f.family),
            heading: getComputedStyle(document.querySelector('h1')).fontFamily,
            bold: document.fonts.check("700 24px 'IBM Plex Sans'"),
        }))"""
    )
    assert any("IBM Plex Sans" in family for family in fonts["loaded"]), fonts
    assert fonts["heading"].strip("'\" ").startswith("IBM Plex Sans"), fonts
    assert fonts["bold"], fonts
    assert _badges(page) == 0


def test_a_concepts_example_fills_its_prompts_and_explains_without_a_badge(visit):
    page = visit()
    _concepts(page)
    first = _image_src(page, "con-finer")
    page.locator("#con-target textarea, #con-target input").first.fill("")
    page.locator("tr.tr-body:visible").nth(1).click()
    page.wait_for_function(
        "() => (document.querySelector('#con-target textarea, #con-target input')"
        "?.value || '').startsWith('a bird with a ')"
    )
    contrast = page.locator("#con-contrast textarea").first.input_value()
    assert contrast.count("a bird with a") == 3
    _image_src(page, "con-finer", not_src=first)
    _wait_text(page, "con-scores", "contrast 3")
    page.wait_for_timeout(300)
    assert _badges(page) == 0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("#con-target", "", "target concept"),
        ("#con-contrast", "", "contrast"),
        ("#con-contrast", ", ".join(f"prompt {i}" for i in range(300)), "contrast"),
        ("#con-template", "no placeholder", "template"),
    ],
)
def test_bad_concept_inputs_warn_naming_the_field_and_leave_the_panels(
    visit, field, value, message
):
    page = visit()
    _concepts(page)
    before = _pixels(page, _image_src(page, "con-finer"))
    box = page.locator(f"{field} textarea, {field} input").first
    box.fill(value)
    if field == "#con-template":
        box.press("Enter")
    page.locator("#con-run").click()
    _warned(page, message)
    after = page.locator("#con-finer img").first.get_attribute("src")
    assert (_pixels(page, after) == before).all()


def test_manual_references_left_empty_warn_and_show_no_badge(visit):
    page = visit()
    _image_src(page, "clf-finer")
    page.locator("#clf-refmode label", has_text="Manual").click()
    _warned(page, "reference")
    page.locator("#clf-run").click()
    _warned(page, "reference")


def test_explain_without_an_image_warns(visit):
    page = visit()
    _image_src(page, "clf-finer")
    page.locator("#clf-image button[aria-label='Remove Image']").first.click()
    page.wait_for_function("() => !document.querySelector('#clf-finer img')")
    page.locator("#clf-run").click()
    _warned(page, "upload an image")


def test_downloads_are_cleared_when_gamma_moves(visit):
    page = visit()
    _image_src(page, "clf-finer")
    page.locator("#clf-gamma input[type=range]").fill("0.3")
    _wait_text(page, "clf-finer-title", "γ=0.3)")
    page.locator("#clf-download").click()
    page.locator("#clf-files", has_text="g0.3").first.wait_for()
    page.locator("#clf-gamma input[type=range]").fill("1")
    _wait_text(page, "clf-finer-title", "γ=1)")
    page.wait_for_function("() => !document.querySelector('#clf-files').innerText.includes('g0.3')")
    page.locator("#clf-download").click()
    page.locator("#clf-files", has_text="g1-").first.wait_for()


def test_colour_map_recolours_from_the_cache(visit, monkeypatch):
    from app.explain import service as service_module

    page = visit()
    src = _image_src(page, "clf-finer")
    jet = _pixels(page, src)
    model_runs = []
    guarded = service_module._guarded
    monkeypatch.setattr(
        service_module, "_guarded", lambda *a, **k: model_runs.append(1) or guarded(*a, **k)
    )
    page.locator("#clf-colormap input").first.click()
    page.get_by_role("option", name="viridis").click()
    viridis = _pixels(page, _image_src(page, "clf-finer", not_src=src))
    assert viridis.shape == jet.shape and not (viridis == jet).all()
    page.wait_for_function("() => document.querySelectorAll('#clf-strip img').length === 6")
    assert model_runs == []  # colours only: re-rendered from the cached maps
    assert _badges(page) == 0
