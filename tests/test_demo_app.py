"""The Gradio demo (`demo/app.py`): its checks as functions, and the whole app in a real headless browser (Debian's
chromium driven by Playwright). `GSS_DEMO_SCREENSHOT=examples/demo_screenshot.png python -m pytest
tests/test_demo_app.py -k browser` also keeps the browser test's screenshot there (the README's)."""

import importlib.util
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import PIL.Image
import pytest


pytest.importorskip("gradio", reason="gradio is in the `demo` extra: pip install -e '.[demo]'")

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "demo" / "app.py"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As root, with this machine's closed network: no sandbox, no background connections, a fresh profile.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.fixture(scope="module")
def app():
    spec = importlib.util.spec_from_file_location("gss_demo_app", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_space_requirements_pin_what_setup_cfg_pins():
    import configparser

    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    pinned = setup["options"]["install_requires"].split() + setup["options.extras_require"]["demo"].split()
    pins = dict(line.split("==") for line in pinned if "==" in line)
    space = [line for line in (REPO / "demo" / "requirements.txt").read_text().splitlines()
             if line and not line.startswith("#")]  # fmt: skip
    assert space and all(pins[name] == version for name, version in (line.split("==") for line in space))
    assert "gradio" in {line.split("==")[0] for line in space}


def test_the_example_photo_is_found(app):
    assert app.EXAMPLE_PHOTO.is_file()


def test_a_text_file_is_refused_with_a_message(app, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    with pytest.raises(app.DemoError, match="notes.txt is not an image this app can read"):
        app.read_upload(str(notes))


def test_the_legend_escapes_class_names(app):
    from types import SimpleNamespace

    config = SimpleNamespace(id2label={0: "<b>road</b>", 1: "sky"}, palette=[[0, 0, 255], [255, 255, 255]],
                             ignore_color=[0, 0, 0])  # fmt: skip
    legend = app.legend_html(np.array([[0, 1], [0, 0]]), SimpleNamespace(config=config))
    assert "&lt;b&gt;road&lt;/b&gt;" in legend and "<b>" not in legend
    assert legend.index("road") < legend.index("sky")  # the larger class first


def test_no_upload_asks_for_one(app):
    with pytest.raises(app.DemoError, match="Upload a photo first"):
        app.read_upload(None)


def test_a_photo_above_the_size_limit_is_refused(app, tmp_path, monkeypatch):
    monkeypatch.setattr(app, "MAX_PIXELS", 100 * 100)
    PIL.Image.new("RGB", (101, 100)).save(tmp_path / "big.png")
    PIL.Image.new("RGB", (100, 100)).save(tmp_path / "fits.png")
    with pytest.raises(app.DemoError, match="101x100, above this app's limit of 10,000 pixels"):
        app.read_upload(str(tmp_path / "big.png"))
    assert app.read_upload(str(tmp_path / "fits.png"))[1].shape == (100, 100, 3)


def test_an_empty_model_path_and_an_offline_hub_id_get_messages(app):
    with pytest.raises(app.DemoError, match="Type a local model folder or a Hub id"):
        app.load(app.OTHER_CHOICE, "  ")
    with pytest.raises(app.DemoError, match="Model someone/gss-model: .*offline mode is on"):
        app.load(app.OTHER_CHOICE, "someone/gss-model")


@pytest.mark.slow
def test_segmenting_the_example_gives_an_overlay_of_its_size_and_an_uncertainty_map(app):
    overlay, maskige, heat_map, legend, table, labels = app.segment_photo(
        str(app.EXAMPLE_PHOTO), app.EMBEDDED_CHOICE, "", False, 2, 1.0, progress=lambda *a, **k: None
    )
    photo = PIL.Image.open(app.EXAMPLE_PHOTO).convert("RGB")
    assert overlay.size == maskige.size == photo.size and labels.shape == (photo.height, photo.width)
    assert heat_map.height == photo.height and heat_map.width > photo.width  # the colour bar is beside it
    assert abs(sum(row[3] for row in table) - 100) < 0.1
    assert all(row[1] in legend for row in table)


@pytest.mark.slow
def test_the_generate_tab_draws_and_completes_maps_with_the_embedded_token_prior(app):
    quiet = lambda *args, **kwargs: None  # noqa: E731
    maps = app.generate_maps(app.EMBEDDED_CHOICE, "", 2, 2, 1.0, 0, progress=quiet)
    assert len(maps) == 2 and maps[0].size == (128 * app.DISPLAY_SCALE, 96 * app.DISPLAY_SCALE)
    labels = np.zeros((360, 480), dtype=np.int64)
    original, erased, completed = app.complete_map(labels, app.EMBEDDED_CHOICE, "", "right half", 2, 0, progress=quiet)
    kept = (slice(None), slice(0, 64 * app.DISPLAY_SCALE))
    assert np.array_equal(np.asarray(completed)[kept], np.asarray(original)[kept])
    assert not np.array_equal(np.asarray(erased), np.asarray(original))
    with pytest.raises(app.DemoError, match="Choose the region to erase"):
        app.complete_map(labels, app.EMBEDDED_CHOICE, "", "left ear", 2, 0, progress=quiet)


@pytest.mark.slow
def test_a_model_without_a_token_prior_gets_the_training_command(app, tmp_path):
    folder = tmp_path / "no-prior"
    shutil.copytree(app.EMBEDDED_MODEL, folder, ignore=shutil.ignore_patterns("token_prior"))
    with pytest.raises(app.DemoError, match=r"Model .*no-prior: no token prior in .*train_token_prior\.py"):
        app.generate_maps(app.OTHER_CHOICE, str(folder), 1, 1, 1.0, 0, progress=lambda *args, **kwargs: None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def served_app(tmp_path):
    """`python demo/app.py` on a free 127.0.0.1 port, its output in a log file (a pipe nobody reads would fill and
    stall it); yields its URL, stops it afterwards."""
    port = free_port()
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    log = tmp_path / "app.log"
    with log.open("w") as output:
        server = subprocess.Popen([sys.executable, str(APP), "--port", str(port)], cwd=REPO, env=environment,
                                  stdout=output, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"The app did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def shown_image(page, selector: str) -> PIL.Image.Image:
    """The picture an image output shows, fetched from its `src` the way the browser does."""
    image = page.locator(f"{selector} img").first
    image.wait_for(state="visible", timeout=180_000)
    response = page.request.get(image.get_attribute("src"))
    assert response.ok, response.status
    return PIL.Image.open(io.BytesIO(response.body())).convert("RGB")


def upload_and_segment(page, path: Path) -> None:
    """Clears the photo input if it holds a file, uploads `path`, waits until the upload is done, segments."""
    clear = page.locator("#photo button[aria-label=Clear]")
    if clear.count():
        clear.click()
    page.locator("#photo input[type=file]").set_input_files(str(path))
    page.locator(f"#photo [data-testid=download-link][download='{path.name}']").wait_for(timeout=30_000)
    page.locator("#segment").click()


@pytest.mark.slow
def test_the_app_in_a_real_browser(served_app, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the `dev` extra")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    photo_path = REPO / "examples" / "camvid_0016E5_08115.png"
    photo = PIL.Image.open(photo_path).convert("RGB")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.goto(served_app)
        upload_and_segment(page, photo_path)
        shown = shown_image(page, "#overlay")
        assert shown.size == photo.size
        assert np.abs(np.asarray(shown, dtype=np.int16) - np.asarray(photo, dtype=np.int16)).mean() > 10
        shown_image(page, "#uncertainty")
        page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
        assert (tmp_path / "demo.png").stat().st_size > 10_000
        if os.environ.get("GSS_DEMO_SCREENSHOT"):  # how the README's screenshot is made
            shutil.copy(tmp_path / "demo.png", os.environ["GSS_DEMO_SCREENSHOT"])

        upload_and_segment(page, notes)
        page.get_by_text("notes.txt is not an image this app can read").first.wait_for(timeout=30_000)

        # A second photo (the example mirrored), so that its overlay is a new file and not the cached first one.
        mirrored = tmp_path / "mirrored.png"
        photo.transpose(PIL.Image.FLIP_LEFT_RIGHT).save(mirrored)
        previous = page.locator("#overlay img").first.get_attribute("src")
        upload_and_segment(page, mirrored)
        page.wait_for_function(
            "previous => { const image = document.querySelector('#overlay img'); "
            "return image && image.src !== previous; }", arg=previous, timeout=180_000,
        )  # fmt: skip
        assert shown_image(page, "#overlay").size == photo.size
        browser.close()
