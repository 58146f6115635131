"""The page in a real browser: headless Chromium driven by Playwright, against the server on tiny models.

Chromium comes from the operating system's packages (Debian `chromium`), found on the PATH or at
BACHSFORMER_CHROMIUM; without it, or without Playwright, these tests skip and say why. Run them
alone with `python -m pytest -m browser`.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time

import numpy as np
import pytest
import tiny
from midi_files import make_midi

from bachsformer.config import load_config
from bachsformer.harmonize import final_chord_end
from bachsformer.metrics import highest_line
from bachsformer.midi import (
    STEPS_PER_QUARTER,
    Meter,
    Tempo,
    TimeSignature,
    quarters_to_midi_bytes,
    quarters_to_notes,
    read_meter_bytes,
    read_midi_bytes,
    read_midi_tracks_bytes,
)
from bachsformer.server import create_app

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("BACHSFORMER_CHROMIUM") or next(
    (path for name in ("chromium", "chromium-browser") if (path := shutil.which(name))), None
)
FOUR_NOTES = [(0, 67), (4, 69), (8, 71), (12, 72)]  # (sixteenth, MIDI pitch): G A B C, a quarter each


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The app on tiny models."""
    root = tmp_path_factory.mktemp("page")
    tiny.write_model_pair(root, melody_quarters=2, decoder_context=True)
    tiny.write_tune_model(root)  # Compose writes tune first, as generate.py does
    # min_note_steps 0: an untrained decoder's voices change key at almost every step, and would all be dropped
    settings = ["generate.candidates=4", "generate.min_note_steps=0", "generate.tune_first=true"]
    return create_app(load_config(tiny.write_config(root), settings))


@pytest.fixture(scope="module")
def server(app):
    """The app served by uvicorn on a free local port in a thread: its URL."""
    uvicorn = pytest.importorskip("uvicorn")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no Chromium: apt-get install chromium (or set BACHSFORMER_CHROMIUM to its path)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="no Playwright: pip install playwright")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(accept_downloads=True, viewport={"width": 1200, "height": 900})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server)
    yield page
    context.close()
    assert errors == []


def cell_centre(page, sixteenth: int, pitch: int) -> tuple[float, float]:
    """Where on the screen the editor's cell of a sixteenth and a pitch lies."""
    grid = page.locator("#grid")
    box = grid.bounding_box()
    size = {name: float(grid.get_attribute(f"data-{name}")) for name in ("gutter", "header", "column", "row", "high")}
    x = box["x"] + size["gutter"] + (sixteenth + 0.5) * size["column"]
    y = box["y"] + size["header"] + (size["high"] - pitch + 0.5) * size["row"]
    return x, y


def editor_notes(page) -> list[tuple[int, int, int]]:
    """The tune in the editor: (onset step, offset step, pitch) of each note drawn."""
    return page.eval_on_selector_all(
        "#grid rect.note", "rects => rects.map(r => [+r.dataset.start, +r.dataset.end, +r.dataset.pitch])"
    )


def harmonize(page):
    page.click("#harmonize")
    page.wait_for_selector("#score svg", timeout=60_000)


def test_a_tune_clicked_in_is_harmonized_played_and_downloaded_with_the_tune_on_top(page):
    for sixteenth, pitch in FOUR_NOTES:
        page.mouse.click(*cell_centre(page, sixteenth, pitch))
    tune = [[sixteenth * 8, sixteenth * 8 + 32, pitch] for sixteenth, pitch in FOUR_NOTES]
    assert editor_notes(page) == tune
    harmonize(page)
    # G A B C ends on C: the key of a tune is the one of its two likeliest that its last note is the tonic of
    assert page.is_visible("#roll") and page.inner_text("#result-facts").startswith("C major · 1 bar ·")
    roll_inked = page.eval_on_selector(
        "#roll", "c => c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some((v, i) => i % 4 == 3 && v)"
    )
    assert roll_inked
    page.click("#play")
    page.wait_for_selector("#play[data-audio='running']", timeout=10_000)
    assert page.inner_text("#play") == "■ Stop"
    with page.expect_download() as download:
        page.click("#download-midi")
    midi = open(download.value.path(), "rb").read()
    soprano = read_midi_tracks_bytes(midi)[0].quarters  # the tune, its own track, whole
    assert quarters_to_notes(soprano).tolist() == tune
    music = read_midi_bytes(midi).quarters  # nothing above it
    top = np.where(soprano.any(axis=1), 87 - np.argmax(soprano[:, ::-1], axis=1), 88)
    assert (np.where(music.any(axis=1), 87 - np.argmax(music[:, ::-1], axis=1), -1) <= top).all()
    with page.expect_download() as download:
        page.click("#download-musicxml")
    assert download.value.suggested_filename == "harmonization.musicxml"
    assert "<score-partwise" in open(download.value.path(), encoding="utf-8").read()
    page.click("#play")
    assert page.get_attribute("#play", "data-state") == "stopped"


def shown_numerals(chords: list[dict]) -> list[list]:
    """[offset, text] of the numerals the page shows: where the key or figure changes, the key named where it does."""
    shown, before = [], None
    for chord in chords:
        now = (chord["key"], chord["figure"], chord["uncertain"])
        if now == before:
            continue
        key = f"{chord['key']}:" if before is None or before[0] != chord["key"] else ""
        shown.append([chord["offset"], key + chord["figure"] + ("?" if chord["uncertain"] else "")])
        before = now
    return shown


def test_the_analysis_shows_numerals_cadences_and_faults_behind_a_toggle_and_a_numeral_plays_its_chord(page):
    for sixteenth, pitch in FOUR_NOTES + [(16, 74), (24, 72), (32, 71), (40, 67)]:
        page.mouse.click(*cell_centre(page, sixteenth, pitch))
    harmonize(page)
    assert page.is_hidden("#analysis") and page.is_hidden("#score g.dir")
    page.check("#show-analysis")
    analysis = page.evaluate("piece.analysis")
    numerals = page.eval_on_selector_all("#numerals .numeral", "b => b.map(x => [+x.dataset.offset, x.textContent])")
    assert numerals == shown_numerals(analysis["chords"]) and numerals[0][1].startswith("G:")
    cadences = page.eval_on_selector_all("#cadences span", "s => s.map(x => x.textContent)")
    assert cadences == [f"{cadence['cadence']} cadence" for cadence in analysis["cadences"]]
    engraved = page.eval_on_selector_all("#score g.dir", "d => d.map(x => x.textContent.replace(/\\s+/g, ' ').trim())")
    assert f"G: {analysis['chords'][0]['figure']}" in engraved and page.is_visible("#score g.dir")
    faults = page.inner_text("#faults")
    assert faults.startswith("Faults:") if analysis["faults"] else faults.startswith("No four-part faults.")
    marked = page.eval_on_selector_all("#score g.measure.fault", "m => m.length")
    assert (marked > 0) == bool(analysis["faults"])
    page.locator("#numerals .numeral").last.click()
    page.wait_for_selector("#numerals[data-played]")
    assert float(page.get_attribute("#numerals", "data-played")) == numerals[-1][0]
    page.uncheck("#show-analysis")
    assert page.is_hidden("#analysis") and page.is_hidden("#score g.dir")


def test_the_editor_lengthens_by_dragging_deletes_by_clicking_and_writes_from_the_keyboard(page):
    page.mouse.move(*cell_centre(page, 0, 60))
    page.mouse.down()
    page.mouse.move(*cell_centre(page, 5, 60), steps=4)
    page.mouse.up()
    assert editor_notes(page) == [[0, 48, 60]]  # dragged to the end of the sixth sixteenth
    page.mouse.click(*cell_centre(page, 8, 64))
    page.mouse.click(*cell_centre(page, 9, 64))  # a click on a note removes it
    assert editor_notes(page) == [[0, 48, 60]]
    page.focus("#grid")
    page.keyboard.press("2")  # eighths
    for _ in range(3):  # from the cell last clicked, the tenth sixteenth, to the seventh
        page.keyboard.press("ArrowLeft")
    page.keyboard.type("ed")
    assert editor_notes(page) == [[0, 48, 60], [48, 64, 64], [64, 80, 62]]
    page.keyboard.press("Backspace")
    assert editor_notes(page) == [[0, 48, 60], [48, 64, 64]]


def test_an_uploaded_midi_file_fills_the_editor_with_its_top_line(page, tmp_path):
    path = tmp_path / "two voices.mid"
    tune = [(67, 0, 1), (71, 1, 1), (74, 2, 2), (72, 4, 1), (71, 5, 1), (67, 6, 2)]
    path.write_bytes(make_midi(tune + [(pitch - 7, start, length) for pitch, start, length in tune]))
    page.set_input_files("#upload", str(path))
    page.wait_for_function("document.querySelectorAll('#grid rect.note').length == 6")
    assert [pitch for _, _, pitch in editor_notes(page)] == [pitch for pitch, _, _ in tune]
    assert "has chords" in page.inner_text("#message")
    harmonize(page)
    assert "G major" in page.inner_text("#result-facts")


def test_a_bar_chosen_in_the_roll_is_regenerated_and_a_chorale_composed(page):
    for sixteenth, pitch in FOUR_NOTES + [(16, 74), (24, 72), (32, 71), (40, 67)]:
        page.mouse.click(*cell_centre(page, sixteenth, pitch))
    harmonize(page)
    assert page.is_disabled("#regenerate")
    width = page.locator("#roll").bounding_box()["width"]
    page.locator("#roll").click(position={"x": width * 0.6, "y": 30})  # in bar 2 of 3 (11 quarters shown)
    assert page.inner_text("#regenerate") == "Regenerate bar 2"
    assert page.eval_on_selector_all("#score g.measure.chosen", "m => m.length") == 1
    before = page.eval_on_selector("#download-midi", "a => a.href")
    page.click("#regenerate")
    page.wait_for_function("document.querySelector('#result-facts').textContent.includes('rewritten')")
    assert "quarters 5–8 rewritten" in page.inner_text("#result-facts")
    assert page.eval_on_selector("#download-midi", "a => a.href") != before
    page.fill("#compose-quarters", "8")
    page.click("#compose")
    page.wait_for_function("document.querySelector('#result-title').textContent == 'The chorale'")
    tune = [note for note in page.evaluate("piece.notes") if note[3]]  # [onset, offset, pitch, in the tune]
    onset, offset = max(tune)[:2]
    assert 8 - 4 <= offset / STEPS_PER_QUARTER <= 8  # the tune ends within the last bar of the 8 quarters asked for
    quarters = -(-final_chord_end(onset, offset, STEPS_PER_QUARTER) // STEPS_PER_QUARTER)  # and its final chord
    assert page.evaluate("piece.quarters") == quarters
    assert f"{-(-quarters // 4)} bars" in page.inner_text("#result-facts")


def test_a_server_error_is_shown_in_one_line(page):
    page.click("#harmonize")  # no tune yet
    assert page.inner_text("#message") == "Write a tune first: click the grid to place its notes."
    page.mouse.click(*cell_centre(page, 0, 67))
    page.click("details.more summary")
    page.fill("#guidance", "50")
    page.click("#harmonize")
    page.wait_for_selector("#message:not([hidden])")
    page.wait_for_function("document.querySelector('#message').textContent.startsWith('guidance')")
    assert page.inner_text("#message").startswith("guidance: Input should be less than or equal to 10")


def test_a_request_over_half_a_second_shows_its_progress(page):
    held = []
    page.route("**/api/harmonization", lambda route: held.append(route))  # held until the test lets it through
    page.mouse.click(*cell_centre(page, 0, 67))
    page.click("#harmonize")
    page.wait_for_selector("#progress:not([hidden])", timeout=5_000)
    assert page.inner_text("#progress-text") == "Harmonizing…" and page.is_disabled("#harmonize")
    held[0].continue_()
    page.wait_for_selector("#score svg")
    assert page.is_hidden("#progress") and page.is_enabled("#harmonize")


def test_a_job_waits_its_turn_saying_so_then_its_bar_counts_the_quarters_written(page, app):
    for sixteenth, pitch in FOUR_NOTES + [(16, 74), (24, 72), (32, 71), (40, 67)]:
        page.mouse.click(*cell_centre(page, sixteenth, pitch))  # the last note ends with quarter 11
    # every value and max the bar is given, as the page sets them
    page.evaluate(
        """() => {
          window.shown = [];
          const bar = document.querySelector('#progress-bar');
          new MutationObserver(() => window.shown.push([bar.value, bar.max, bar.hasAttribute('value')]))
            .observe(bar, { attributes: true, attributeFilter: ['value', 'max'] });
        }"""
    )
    with app.state.harmonizer.turns.turn():  # another request holds the models
        page.click("#harmonize")
        page.wait_for_function("document.querySelector('#progress-text').textContent.startsWith('Waiting')")
        assert page.inner_text("#progress-text") == "Waiting for 1 request ahead…"
        assert page.is_visible("#progress") and page.is_disabled("#harmonize")
    page.wait_for_selector("#score svg")
    shown = page.evaluate("window.shown")
    counted = [value for value, most, has_value in shown if has_value]
    assert counted and counted[-1] == 11 and counted == sorted(counted)  # filled to the end, never back
    assert {most for value, most, has_value in shown if has_value} == {11}
    assert page.get_attribute("#progress-bar", "max") == "11" and page.is_hidden("#progress")


def test_a_letter_typed_after_a_click_follows_the_note_clicked_in(page):
    page.mouse.click(*cell_centre(page, 0, 67))
    page.keyboard.type("ab")
    assert editor_notes(page) == [[0, 32, 67], [32, 64, 69], [64, 96, 71]]


def test_an_opened_pickup_keeps_its_rests_and_the_download_its_file_s_name(page, tmp_path):
    path = tmp_path / "Chorał für Anna.mid"  # a pickup: the tune starts on the third beat of 3/4
    tune = [(67, 2, 1), (71, 3, 1), (74, 4, 1), (72, 5, 1), (71, 6, 2)]
    meter = Meter((TimeSignature(0.0, 3, 4),), (Tempo(0.0, 60.0),), lead=2.0)
    path.write_bytes(quarters_to_midi_bytes(read_midi_bytes(make_midi(tune)).quarters, meter=meter))
    page.set_input_files("#upload", str(path))
    page.wait_for_function("document.querySelectorAll('#grid rect.note').length == 5")
    assert editor_notes(page)[0] == [64, 96, 67]  # after two quarters of rests, as in the file
    harmonize(page)
    with page.expect_download() as download:
        page.click("#download-midi")
    assert download.value.suggested_filename == "Chorał für Anna-harmonized.mid"
    midi = open(download.value.path(), "rb").read()
    assert read_meter_bytes(midi) == meter
    assert quarters_to_notes(highest_line(read_midi_bytes(midi).quarters))[0].tolist() == [0, 32, 67]


def test_the_api_page_lists_every_call_without_a_network(browser, server):
    context = browser.new_context()
    page = context.new_page()
    outside = []
    page.on("request", lambda request: outside.append(request.url) if not request.url.startswith(server) else None)
    page.goto(server + "api")
    page.wait_for_selector("section.panel h2")
    titles = page.locator("section.panel h2").all_inner_texts()
    context.close()
    assert "POST /api/harmonize" in titles and "GET /api/info" in titles
    assert outside == []
