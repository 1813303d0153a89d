"""latentforge explore in a real headless Chromium (Playwright driving the system's Chromium).

A stacked AE and a VAE trained briefly on mnist-4k are served by the real command; the page must
draw every point of the map, show a clicked point's reconstruction, interpolate between two points,
switch runs and sample. Screenshots go to a temporary folder (or to $LATENTFORGE_SCREENSHOTS).
Skipped, with the reason, where Playwright or Chromium is missing (`.ci/run` installs Chromium).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, mnist4k_path

pytest.importorskip("starlette", reason="explore's optional dependencies (pip install 'latentforge[explore]')")
pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright; "
                    "it drives the system's Chromium, no browser download)")
CHROMIUM = os.environ.get("LATENTFORGE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no Chromium here (apt-get install chromium; .ci/run does)", allow_module_level=True)

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
N = 4000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from latentforge.train import train
    base = tmp_path_factory.mktemp("explore-browser")
    for name in ("stacked-ae", "vae"):
        train(name, str(mnist4k_path()), out=base / name, overrides={"epochs": 1}, progress=False, device="cpu",
              overwrite=True, log=lambda m: None)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "latentforge", "explore", str(base / "stacked-ae"),
                             str(base / "vae"), "--method", "pca", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    line = proc.stdout.readline()               # the server's own "ready" line: no sleeping
    try:
        assert line.startswith("serving http://127.0.0.1:"), (line, proc.stderr.read() if proc.poll() else "")
        yield line.split()[1]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)


@pytest.fixture
def page(tmp_path):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        except Exception as e:          # noqa: BLE001 - a Chromium that cannot start here
            pytest.skip(f"Chromium at {CHROMIUM} does not start: {str(e).splitlines()[0]}")
        pg = browser.new_page(viewport={"width": 1400, "height": 860})
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.errors = errors
        yield pg
        browser.close()


def _shots(tmp_path: Path) -> Path:
    out = Path(os.environ.get("LATENTFORGE_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _natural_width(pg, selector: str) -> int:
    return pg.eval_on_selector(selector, "e => e.naturalWidth")


def test_explore_in_chromium(server, page, tmp_path):
    pg, shots = page, _shots(tmp_path)
    pg.goto(server)
    pg.wait_for_selector("#map[data-ready='1']", timeout=120_000)
    # the map shows every point: all of them in view, drawn
    assert pg.get_attribute("#map", "data-points") == str(N)
    assert pg.get_attribute("#map", "data-drawn") == str(N)
    assert int(pg.get_attribute("#map", "data-thumbs")) > 20            # thumbnails of the digits
    assert pg.locator("#legend div").count() == 10
    # click a point: its image and its reconstruction
    a, b = 17, 2345
    pg.mouse.click(*pg.evaluate(f"lfExplore.screenOf({a})"))
    pg.wait_for_selector("#point-rec[data-loaded='1']", timeout=30_000)
    assert pg.evaluate("lfExplore.state.sel.a") == a
    assert _natural_width(pg, "#point-rec") == 28 and _natural_width(pg, "#point-img") == 28
    pg.wait_for_selector("#point-neighbours img", timeout=30_000)
    assert pg.locator("#point-neighbours img").count() == 8
    assert "percentile" in pg.text_content("#point-error")
    pg.screenshot(path=str(shots / "explore-ae-point.png"))
    # shift-click a second point, interpolate
    pg.keyboard.down("Shift")
    pg.mouse.click(*pg.evaluate(f"lfExplore.screenOf({b})"))
    pg.keyboard.up("Shift")
    assert pg.evaluate("lfExplore.state.sel.b") == b
    pg.click("#interp-go")
    pg.wait_for_selector("#interp-img[data-loaded='1']", timeout=30_000)
    assert _natural_width(pg, "#interp-img") == 8 * 29 + 1
    assert pg.is_hidden("#sample-panel")                                 # an AE does not sample
    # upload a digit (the data's own image 17): it lands on the map, with its anomaly percentile
    png = tmp_path / "upload.png"
    data = pg.evaluate(f"""async () => {{
        const r = await fetch('api/runs/0/images/{a}.png');
        return Array.from(new Uint8Array(await r.arrayBuffer())); }}""")
    png.write_bytes(bytes(data))
    pg.set_input_files("#upload-file", str(png))
    pg.wait_for_function("document.getElementById('upload-score').textContent.includes('percentile')", timeout=60_000)
    assert pg.evaluate("lfExplore.state.upload !== null")
    # zoom in: fewer points in view
    box = pg.locator("#map").bounding_box()
    pg.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    for _ in range(5):
        pg.mouse.wheel(0, -400)
    pg.wait_for_function(f"+document.getElementById('map').dataset.drawn < {N}", timeout=10_000)
    pg.screenshot(path=str(shots / "explore-ae-zoom.png"))
    # the VAE: switch runs, the sampling panel samples at once; another seed, another grid
    pg.select_option("#run", "1")
    pg.wait_for_selector("#sample-img[data-loaded='1']", timeout=60_000)
    pg.wait_for_selector("#map[data-ready='1']", timeout=120_000)
    assert pg.get_attribute("#map", "data-points") == str(N)
    assert _natural_width(pg, "#sample-img") == 4 * 29 + 1
    first = pg.get_attribute("#sample-img", "src")
    pg.fill("#sample-seed", "7")
    pg.click("#sample-go")
    pg.wait_for_function(f"document.getElementById('sample-img').src !== {first!r} && "
                         "document.getElementById('sample-img').dataset.loaded === '1'", timeout=60_000)
    # a latent walk: ten codes decoded, sent as float32 (the page's binary decode request)
    with pg.expect_request(lambda r: "/decode" in r.url) as sent:
        pg.click("#walk-go")
    assert sent.value.headers["content-type"] == "application/octet-stream" and "n=10" in sent.value.url
    assert len(sent.value.post_data_buffer) == 10 * pg.evaluate("lfExplore.state.run.code_width") * 4
    pg.wait_for_selector("#walk-img[data-loaded='1']", timeout=30_000)
    assert _natural_width(pg, "#walk-img") == 10 * 29 + 1
    pg.locator("#walk-img").screenshot(path=str(shots / "explore-vae-walk.png"))
    pg.mouse.click(*pg.evaluate(f"lfExplore.screenOf({a})"))
    pg.wait_for_selector("#point-rec[data-loaded='1']", timeout=30_000)
    assert pg.input_value("#interp-method") == "slerp"                   # the VAE's preference
    pg.keyboard.down("Shift")
    pg.mouse.click(*pg.evaluate(f"lfExplore.screenOf({b})"))
    pg.keyboard.up("Shift")
    pg.click("#interp-go")
    pg.wait_for_selector("#interp-img[data-loaded='1']", timeout=30_000)
    pg.screenshot(path=str(shots / "explore-vae.png"))
    assert pg.errors == []
    for name in ("explore-ae-point.png", "explore-ae-zoom.png", "explore-vae.png"):
        assert (shots / name).stat().st_size > 10_000
