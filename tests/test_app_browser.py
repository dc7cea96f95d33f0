"""The web app in a real browser (Debian's chromium driven by Playwright; never a downloaded one).

Loads the page, uploads an example, moves the γ slider and checks that only the Finer-CAM
panel changes; feeds a non-image file through the upload widget and checks the error toast;
explains a concept in the second tab. Set FINERCAM_UPDATE_SCREENSHOT=1 to refresh
docs/concepts.png from this run (``test_app_first_minute.py`` takes docs/screenshot.png).
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import numpy as np
import pytest
from appserver import REPO_ROOT, example, running_server, write_image
from PIL import Image

from app.explain.render import display_size
from app.ui.panels import NEEDS_MODEL

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium"
    ),
]


@pytest.fixture(scope="module")
def browser():
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def server():
    with running_server() as srv:
        yield srv


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(45_000)
    page.goto(server.url)
    page.locator("#clf-image").wait_for()
    # The page load fills the tabs with their explained examples (it waits up to 30 s for them
    # after a server start); a picture uploaded before that answer arrives would have its
    # panels replaced by the example's.
    page.locator("#clf-image button[aria-label='Remove Image']").wait_for(timeout=90_000)
    yield page
    context.close()


def _image_src(page, elem_id: str, not_src: str | None = None) -> str:
    """Wait until the output image ``elem_id`` shows a loaded picture (other than ``not_src``)."""
    page.wait_for_function(
        """([id, old]) => {
            const img = document.querySelector(`#${id} img`);
            return img && img.complete && img.naturalWidth > 0 && img.src && img.src !== old;
        }""",
        arg=[elem_id, not_src],
    )
    return page.locator(f"#{elem_id} img").first.get_attribute("src")


def _wait_text(page, elem_id: str, text: str) -> None:
    page.wait_for_function(
        "([id, text]) => (document.getElementById(id)?.innerText || '').includes(text)",
        arg=[elem_id, text],
    )


def _pixels(page, src: str) -> np.ndarray:
    """The picture an <img> shows: fetched from the server, or decoded from a data: URL (the
    panels of live events travel inline)."""
    if src.startswith("data:"):
        body = base64.b64decode(src.split(",", 1)[1])
    else:
        body = page.request.get(src).body()
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))


def _marked_thumbnail(page, strip: str = "clf-strip") -> str | None:
    """The aria-label of the strip thumbnail shown selected, if any."""
    return page.evaluate(
        "id => document.querySelector(`#${id} button.selected`)?.ariaLabel ?? null", strip
    )


def _upload(page, elem_id: str, path: Path) -> None:
    """Put ``path`` in the image input, removing the picture it shows first (the page opens
    on an example)."""
    remove = page.locator(f"#{elem_id} button[aria-label='Remove Image']")
    if remove.count():
        remove.first.click()  # the panels are cleared before the new picture's arrive
        cam = elem_id.replace("-image", "-cam")
        page.wait_for_function(f"() => !document.querySelector('#{cam} img')")
    page.locator(f"#{elem_id} input[type=file]").set_input_files(str(path))


def test_upload_example_move_gamma_and_finer_cam_changes(page, server, tmp_path):
    bird = example()
    _upload(page, "clf-image", bird)
    finer_src = _image_src(page, "clf-finer")
    cam_src = _image_src(page, "clf-cam")
    before_finer, before_cam = _pixels(page, finer_src), _pixels(page, cam_src)
    assert before_finer.shape[:2] == display_size(*Image.open(bird).size)[::-1]
    _wait_text(page, "clf-used", "reference 1")

    page.locator("#clf-gamma input[type=range]").fill("1")
    after_src = _image_src(page, "clf-finer", not_src=finer_src)
    after_finer = _pixels(page, after_src)
    after_cam = _pixels(page, page.locator("#clf-cam img").first.get_attribute("src"))
    assert not np.array_equal(before_finer, after_finer), "moving γ must change Finer-CAM"
    np.testing.assert_array_equal(before_cam, after_cam)  # ... and only Finer-CAM
    _wait_text(page, "clf-finer-title", "γ=1)")

    shot = tmp_path / "screenshot.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_gamma_moves_skip_the_queue_when_cached_and_wait_in_it_when_not(page, server):
    """A cached γ move is answered outside the queue; once the cache lost the image (other
    visitors' images evicted it) the same move runs the model on the queue and still shows."""
    _upload(page, "clf-image", example())
    src = _image_src(page, "clf-finer")
    _wait_text(page, "clf-used", "reference 1")
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)

    page.locator("#clf-gamma input[type=range]").fill("0.2")
    fast_src = _image_src(page, "clf-finer", not_src=src)
    assert any("/run/predict" in url for url in posts), posts
    assert not any("/queue/join" in url for url in posts), posts

    server.service.entries.clear()
    server.service.trunks.clear()
    posts.clear()
    page.locator("#clf-gamma input[type=range]").fill("0.9")
    queued_src = _image_src(page, "clf-finer", not_src=fast_src)
    assert any("/queue/join" in url for url in posts), posts
    assert not np.array_equal(_pixels(page, fast_src), _pixels(page, queued_src))
    _wait_text(page, "clf-finer-title", "γ=0.9)")
    page.wait_for_timeout(300)
    assert NEEDS_MODEL not in page.content()  # the declined fast render is silent


def test_non_image_upload_shows_error_and_the_app_keeps_working(page, server, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("definitely not a picture\n" * 20)
    _upload(page, "clf-image", bad)
    page.get_by_text("not a supported image").first.wait_for()
    assert "Traceback" not in page.content()

    good = write_image(tmp_path / "good.png", (112, 80), seed=1)
    _upload(page, "clf-image", good)
    assert _pixels(page, _image_src(page, "clf-finer")).shape[:2] == display_size(112, 80)[::-1]


def test_concepts_tab_explains_a_prompt(page, server):
    """The page's concept method (attention-gradient, class token) is named in the title."""
    page.get_by_role("tab", name="CLIP concepts").click()
    page.locator("#con-target textarea, #con-target input").first.fill("a bird with a red crown")
    page.locator("#con-contrast textarea").first.fill("a blue bird")
    _upload(page, "con-image", example())
    page.locator("#con-run").click()
    src = _image_src(page, "con-finer")
    assert _pixels(page, src).ndim == 3
    _wait_text(page, "con-scores", "a blue bird")
    _wait_text(page, "con-cam-title", "Attention-gradient, class token")
    if os.environ.get("FINERCAM_UPDATE_SCREENSHOT") == "1":
        page.screenshot(path=str(REPO_ROOT / "docs" / "concepts.png"), full_page=True)


def test_strip_click_sets_gamma_and_slider_moves_write_no_downloads(page, server, monkeypatch):
    from app.ui.tab_glue import DownloadDir

    saves = []
    original = DownloadDir.save
    monkeypatch.setattr(
        DownloadDir, "save", lambda self, *a, **k: saves.append(1) or original(self, *a, **k)
    )
    _upload(page, "clf-image", example())
    page.wait_for_function("() => document.querySelectorAll('#clf-strip img').length === 6")
    finer_src = _image_src(page, "clf-finer")
    before = _pixels(page, finer_src)

    page.locator("#clf-strip button[aria-label='Thumbnail 6 of 6']").click()  # γ = 1
    page.wait_for_function(
        "() => document.querySelector('#clf-gamma input[type=number]').value === '1'"
    )
    after_src = _image_src(page, "clf-finer", not_src=finer_src)
    assert not np.array_equal(before, _pixels(page, after_src)), "the Finer panel must follow"
    _wait_text(page, "clf-finer-title", "γ=1)")

    assert _marked_thumbnail(page) == "Thumbnail 6 of 6"
    page.locator("#clf-gamma input[type=range]").fill("0.3")
    _image_src(page, "clf-finer", not_src=after_src)
    _wait_text(page, "clf-finer-title", "γ=0.3)")
    page.wait_for_function("() => !document.querySelector('#clf-strip button.selected')")
    # Between strip values the mark is not re-sent; onto one, it moves there.
    page.locator("#clf-gamma input[type=range]").fill("0.35")
    _wait_text(page, "clf-finer-title", "γ=0.35)")
    assert _marked_thumbnail(page) is None
    page.locator("#clf-gamma input[type=range]").fill("0.4")
    _wait_text(page, "clf-finer-title", "γ=0.4)")
    page.wait_for_function(
        "() => document.querySelector('#clf-strip button.selected')?.ariaLabel"
        " === 'Thumbnail 3 of 6'"
    )
    assert saves == []  # a new image, a strip click and slider moves wrote no download
    page.locator("#clf-download").click()
    page.locator("#clf-files a, #clf-files [data-testid='file']").first.wait_for()
    assert len(saves) == 1


# Records, in the page, when the Finer panel first shows a picture and when the faithfulness
# line first holds a sentence (after the call, which follows a cleared image input).
RECORD_ORDER_JS = """
() => {
  window.__order = {};
  const stamp = (name) => {
    if (!(name in window.__order)) window.__order[name] = performance.now();
  };
  new MutationObserver(() => {
    if (document.querySelector('#clf-finer img')?.src) stamp('finer');
    const line = document.getElementById('clf-trust')?.innerText || '';
    if (line.includes('Removing')) stamp('trust');
  }).observe(document.body,
             {subtree: true, childList: true, attributes: true, characterData: true});
}
"""


def test_faithfulness_sentence_and_bars_arrive_after_the_panels(page, server, tmp_path):
    bird = write_image(tmp_path / "bird.png", (96, 80))
    remove = page.locator("#clf-image button[aria-label='Remove Image']")
    remove.first.click()
    page.wait_for_function("() => !document.querySelector('#clf-cam img')")
    _wait_text(page, "clf-trust", "scored once the panels are shown")  # no image: no score
    page.evaluate(RECORD_ORDER_JS)
    page.locator("#clf-image input[type=file]").set_input_files(str(bird))
    _image_src(page, "clf-finer")
    _wait_text(page, "clf-trust", "Removing Finer-CAM's top 5 %")
    order = page.evaluate("() => window.__order")
    assert order["finer"] <= order["trust"], order  # the panels never wait for the score
    assert page.locator("#clf-trust .trust-bar").count() == 2
    text = page.locator("#clf-trust").inner_text()
    assert "look-alikes" in text and "removing CAM's top 5 %" in text


def test_compare_tab_ranks_every_method_and_a_click_makes_it_active(page, server):
    _image_src(page, "clf-finer")  # the page opens on an explained example
    page.get_by_role("tab", name="Compare methods").click()
    page.wait_for_function("() => document.querySelectorAll('#cmp-grid img').length >= 4")
    _wait_text(page, "cmp-summary", "Highest first")
    assert "Score-CAM" in page.locator("#cmp-summary").inner_text()  # offered on request only
    thumbnails = page.locator("#cmp-grid button.thumbnail-item")
    count = thumbnails.count()
    assert count >= 4 and count % 2 == 0  # every method's CAM and Finer map
    labels = page.locator("#cmp-grid .caption-label").all_inner_texts()
    methods = [label.split(". ", 1)[1].rsplit(":", 1)[0].removeprefix("Finer ") for label in labels]
    assert page.locator("#clf-method input").input_value() == "Grad-CAM"
    other = next(i for i, method in enumerate(methods) if method != "Grad-CAM")
    thumbnails.nth(other).click()
    page.wait_for_function(
        "label => document.querySelector('#clf-method input')?.value === label", arg=methods[other]
    )
    page.locator("#clf-finer").wait_for(state="visible")  # back on the classifier tab
    _wait_text(page, "clf-cam-title", methods[other])  # ... which re-rendered with the method
