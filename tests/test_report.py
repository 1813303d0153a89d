"""The run report and the comparison page (latentforge report / compare / demo), checked as HTML and
in a real browser: headless Chromium loads the page from a file:// URL over the DevTools protocol
(``--remote-debugging-pipe``), the DOM tells whether every image loaded, and a full-page screenshot
must not be blank.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from latentforge.data import load_data
from latentforge.train import train

TINY = {   # model -> config overrides: a few seconds of training on 256 digits
    "stacked-ae": dict(hidden_sizes=[32], coding_size=8, epochs=2),
    "vae": dict(hidden_sizes=[32, 16], coding_size=4, epochs=2),
    "conditional-vae": dict(hidden_sizes=[32, 16], coding_size=4, epochs=1),
    "dcgan": dict(g_channels=8, d_channels=4, coding_size=8, epochs=2),
    "ddpm": dict(channels=8, channel_mult=[1, 2], steps=50, sample_steps=5, epochs=1),
    "classifier": dict(hidden_sizes=[32], coding_size=8, epochs=2),
}
EXPECTED = {   # sections each model type must have (beyond run, metrics, curves, config)
    "stacked-ae": {"reconstructions", "interpolations", "tsne"},
    "vae": {"reconstructions", "samples", "evolution", "interpolations", "tsne"},
    "conditional-vae": {"reconstructions", "samples", "interpolations", "tsne"},
    "dcgan": {"samples", "evolution", "interpolations"},
    "ddpm": {"samples", "evolution"},
    "classifier": {"tsne"},
}
ALWAYS = {"run", "metrics", "curves", "config"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    from threadpoolctl import threadpool_limits   # t-SNE's OpenMP threads crawl on a shared 2-core box
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def digits():
    return load_data("digits").subset(slice(0, 256))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, digits):
    """One tiny trained run per model type (VAE and DDPM with --tensorboard: their per-epoch grids)."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, cfg in TINY.items():
        out[name] = train(name, digits, out=root / name, overrides=cfg, progress=False, log=lambda m: None,
                          device="cpu", tensorboard=name in ("vae", "ddpm")).run_dir
    return out


@pytest.fixture(scope="module")
def reports(runs):
    """Each run's report page, written once (the CLI is exercised by the tests below)."""
    from latentforge.report.html import build_report
    return {name: build_report(run_dir) for name, run_dir in runs.items()}


def _sections(page: str) -> dict[str, str]:
    """{section id: its HTML}."""
    return dict(re.findall(r'<section id="([^"]+)">(.*?)</section>', page, re.S))


def _images(fragment: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', fragment)]


def _check_pngs(fragment: str) -> int:
    from PIL import Image
    pngs = _images(fragment)
    for png in pngs:
        im = Image.open(io.BytesIO(png))
        im.load()
        assert im.width > 20 and im.height > 20
        assert np.asarray(im.convert("L"), dtype=float).std() > 5      # not a blank image
    return len(pngs)


@pytest.mark.parametrize("name", list(TINY))
def test_report_has_the_sections_of_each_model_type(runs, reports, name):
    assert reports[name] == runs[name] / "report.html"
    page = reports[name].read_text()
    secs = _sections(page)
    assert ALWAYS | EXPECTED[name] <= set(secs), sorted(secs)
    assert not {"reconstructions", "tsne"} & set(secs) - EXPECTED[name]
    assert "src=\"http" not in page and "<script" not in page          # self-contained, static
    for key in EXPECTED[name] | {"curves"}:
        assert _check_pngs(secs[key]) >= 1, key
    assert "not drawn" not in page and "data not available" not in page
    assert f"<h1>{name}</h1>" in page and "digits" in page                 # header: model and data
    hist = json.loads((runs[name] / "history.json").read_text())
    metrics = secs["metrics"]
    assert f"history, epoch {len(hist)}" in metrics
    if name in ("stacked-ae", "vae"):
        assert ">psnr<" in metrics and ">mse<" in metrics
    if name == "vae":
        assert "iw_nll" in metrics
        assert len(_images(secs["evolution"])) == TINY["vae"]["epochs"]      # from the TensorBoard events
    if name == "classifier":
        assert ">accuracy<" in metrics
    if name == "dcgan":
        assert "discriminator (d_loss)" in secs["curves"]
        assert len(_images(secs["evolution"])) == len(list((runs[name] / "samples").glob("epoch_*.png")))
    run_json = json.loads((runs[name] / "run.json").read_text())
    assert f"{run_json['params']:,}" in secs["run"]                     # parameters card
    assert "samples/s" in secs["run"]
    split = run_json["hardware"]["batch_split"]
    assert f"batch split (threads per step)</th><td>{split}<" in secs["run"]


def test_report_without_data_skips_data_sections_with_a_note(tmp_path, digits, run_cli):
    src = tmp_path / "digits.npz"
    np.savez(src, x=digits.x[:128, 0], y=digits.y[:128])
    run_dir = train("vae", str(src), out=tmp_path / "run", overrides={**TINY["vae"], "epochs": 1, "batch_size": 32},
                    progress=False, log=lambda m: None, device="cpu").run_dir
    src.unlink()                                                        # the data is gone
    code, out, err = run_cli("report", run_dir)
    assert code == 0, err
    page = (run_dir / "report.html").read_text()
    secs = _sections(page)
    assert 'class="banner"' in page and "data not available" in page
    for key in ("reconstructions", "tsne", "interpolations"):
        assert "data not available" in secs[key] and not _images(secs[key])
    assert _check_pngs(secs["samples"]) == 1 and _check_pngs(secs["curves"]) == 1
    # --data brings the data-dependent sections back
    np.savez(tmp_path / "again.npz", x=digits.x[:128, 0], y=digits.y[:128])
    code, out, err = run_cli("report", run_dir, "--data", tmp_path / "again.npz", "--out", tmp_path / "r.html")
    assert code == 0, err
    secs = _sections((tmp_path / "r.html").read_text())
    assert _check_pngs(secs["reconstructions"]) == 1 and _check_pngs(secs["tsne"]) == 1


def test_report_command_includes_metrics_json(runs, tmp_path, run_cli):
    run_dir = tmp_path / "run"
    shutil.copytree(runs["dcgan"], run_dir)
    (run_dir / "metrics.json").write_text(json.dumps({"fid": 12.5, "kid": {"mean": 0.0123, "std": 0.002},
                                                      "model": "dcgan"}))
    code, out, err = run_cli("report", run_dir)
    assert code == 0, err
    assert out == f"wrote {run_dir / 'report.html'}\n"
    metrics = _sections((run_dir / "report.html").read_text())["metrics"]
    assert ">fid<" in metrics and "12.5" in metrics and ">kid.mean<" in metrics and "0.0123" in metrics


def test_compare(runs, tmp_path, run_cli):
    a, b = runs["stacked-ae"], runs["vae"]
    (b / "metrics.json").write_text(json.dumps({"mse": 0.01}))
    try:
        code, out, err = run_cli("compare", a, b, runs["dcgan"], "--out", tmp_path / "c.html")
    finally:
        (b / "metrics.json").unlink()
    assert code == 0, err
    page = (tmp_path / "c.html").read_text()
    secs = _sections(page)
    table = secs["table"]
    assert re.findall(r"<th>([^<]*)</th>", table.split("</thead>")[0]) == ["", "stacked-ae", "vae", "dcgan"]
    assert re.findall(r'<td class="num best">([^<]+)</td>', table)     # some row has a winner
    losses = [json.loads((r / "history.json").read_text())[-1]["valid_loss"] for r in (a, b)]
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", re.search(r"<tr><th>valid_loss</th>(.*?)</tr>", table).group(1))
    assert [float(c) for c in cells[:2]] == pytest.approx(losses, rel=1e-3)
    assert cells[2] == "—"                                               # the GAN has no validation loss
    best = min(losses)
    assert f'<td class="num best">{best:.4g}</td>' in table
    mse_row = re.search(r"<tr><th>mse</th>(.*?)</tr>", table).group(1)  # from vae's metrics.json
    assert re.findall(r"<td[^>]*>([^<]*)</td>", mse_row) == ["—", "0.01", "—"]
    assert _check_pngs(secs["curves"]) == 1


def test_report_and_compare_errors(tmp_path, runs, run_cli):
    code, _, err = run_cli("report", tmp_path / "nope")
    assert code == 2 and err.count("\n") == 1 and "no such run folder" in err
    code, _, err = run_cli("compare", runs["vae"], "--out", tmp_path / "c.html")
    assert code == 2 and "at least 2" in err
    (tmp_path / "half").mkdir()
    code, _, err = run_cli("compare", runs["vae"], tmp_path / "half", "--out", tmp_path / "c.html")
    assert code == 2 and "no run.json" in err
    code, _, err = run_cli("report", runs["vae"], "--out", tmp_path / "missing" / "r.html")
    assert code == 2 and "does not exist" in err


def test_demo_writes_the_report(tmp_path, digits, run_cli):
    np.savez(tmp_path / "d.npz", x=digits.x[:200, 0], y=digits.y[:200])
    code, out, err = run_cli("demo", "--epochs", "1", "--out", tmp_path / "demo", "--data", tmp_path / "d.npz",
                             "--no-progress")
    assert code == 0, err
    report = tmp_path / "demo" / "report.html"
    assert f"report: {report}" in out
    assert {"reconstructions", "tsne", "curves"} <= set(_sections(report.read_text()))


# ------------------------------------------------------------------------------------ the browser
def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    """A Chromium binary. Tests install nothing: `.ci/run` installs Debian's `chromium` for CI; elsewhere
    this test skips with the reason."""
    path = find_chromium()
    if path is None:
        pytest.skip("Chromium is not installed (CI's .ci/run installs it: apt-get install chromium)")
    return path


class DevTools:
    """Chromium driven over the DevTools protocol on a pipe (fds 3 and 4): no port, no network."""

    def __init__(self, binary: str, width: int = 1280, height: int = 900):
        self._profile = tempfile.mkdtemp(prefix="lf-chromium-")
        to_r, self._to_w = os.pipe()
        self._from_r, from_w = os.pipe()

        def child_fds():      # the pipe ends may already be fds 3/4: move them out of the way first
            import fcntl
            r, w = fcntl.fcntl(to_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_w, fcntl.F_DUPFD, 10)
            os.dup2(r, 3)
            os.dup2(w, 4)

        args = [binary, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--mute-audio",
                "--disable-background-networking", f"--user-data-dir={self._profile}",
                f"--window-size={width},{height}", "about:blank"]
        # close_fds=False: subprocess would otherwise close fds 3 and 4 after preexec_fn made them
        self.proc = subprocess.Popen(args, close_fds=False, preexec_fn=child_fds,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_r)
        os.close(from_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def _read(self) -> dict:
        while b"\0" not in self._buf:
            chunk = os.read(self._from_r, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, session: str | None = None, **params):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._to_w, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def page(self, method: str, **params):
        return self.call(method, self.session, **params)

    def wait_event(self, name: str) -> dict:
        for i, ev in enumerate(self.events):
            if ev.get("method") == name:
                return self.events.pop(i)
        while True:
            ev = self._read()
            if ev.get("method") == name:
                return ev
            self.events.append(ev)

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_w)
        os.close(self._from_r)
        shutil.rmtree(self._profile, ignore_errors=True)


IMAGE_STATUS = """(async () => {
  const imgs = [...document.images];
  await Promise.all(imgs.map(i => i.decode().catch(() => null)));
  return {n: imgs.length,
          broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
          sections: [...document.querySelectorAll('section h2')].map(h => h.textContent),
          height: document.documentElement.scrollHeight};
})()"""


def load_in_browser(binary: str, path: Path, timeout: float = 120) -> tuple[dict, bytes]:
    """Load ``path`` from a file:// URL; return (image status from the DOM, full-page PNG)."""
    import signal
    tools = DevTools(binary)
    signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(TimeoutError("Chromium did not answer")))
    signal.alarm(int(timeout))
    try:
        tools.page("Page.enable")
        tools.page("Page.navigate", url=path.resolve().as_uri())
        tools.wait_event("Page.loadEventFired")
        status = tools.page("Runtime.evaluate", expression=IMAGE_STATUS, awaitPromise=True,
                            returnByValue=True)["result"]["value"]
        size = tools.page("Page.getLayoutMetrics")["cssContentSize"]
        shot = tools.page("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        return status, base64.b64decode(shot["data"])
    finally:
        signal.alarm(0)
        tools.close()


def _check_in_browser(chromium: str, page: Path, shot: Path) -> dict:
    from PIL import Image
    status, png = load_in_browser(chromium, page)
    shot.write_bytes(png)
    assert status["n"] > 0 and status["broken"] == [], status
    im = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)
    assert im.shape[0] >= 900 and im.shape[1] >= 1000
    assert im.std() > 20                                                 # not a blank page
    values, counts = np.unique(im.astype(np.uint8), return_counts=True)
    assert counts.max() / im.size < 0.9                                  # no single colour fills it
    return status


def test_report_in_chromium(chromium, reports, tmp_path):
    status = _check_in_browser(chromium, reports["vae"], tmp_path / "report.png")
    n_img = len(_images(reports["vae"].read_text()))
    assert status["n"] == n_img >= 7                # curves, recon, samples, 2 epochs, interpolation, t-SNE
    shown = set(status["sections"])
    assert {"Metrics", "Loss curves", "Reconstructions", "Samples", "Interpolations", "Config"} <= shown
    assert status["height"] > 2000


def test_compare_in_chromium(chromium, runs, run_cli, tmp_path):
    out = tmp_path / "compare.html"
    code, _, err = run_cli("compare", runs["stacked-ae"], runs["vae"], runs["dcgan"], "--out", out)
    assert code == 0, err
    status = _check_in_browser(chromium, out, tmp_path / "compare.png")
    assert status["n"] == 1


@pytest.mark.slow
def test_report_for_every_registered_model(tmp_path, digits):
    """Every model of the registry (tiny configs of the contract test) gets a report without a failed section."""
    from test_models import TINY as TINY_ALL

    from latentforge.models import REGISTRY
    from latentforge.report.html import build_report
    for name in REGISTRY:
        cfg = {**TINY_ALL[name], "epochs": 1, "batch_size": 16}
        if "n_classes" in cfg:
            cfg["n_classes"] = 10
        run = train(name, digits.subset(slice(0, 160)), out=tmp_path / name, overrides=cfg, progress=False,
                    log=lambda m: None, device="cpu")
        page = build_report(run.run_dir).read_text()
        secs = _sections(page)
        assert ALWAYS <= set(secs) and "not drawn" not in page, name
        for key in {"reconstructions", "samples", "interpolations", "tsne"} & set(secs):
            assert _check_pngs(secs[key]) >= 1, (name, key)


def test_open_flag_opens_the_page(runs, tmp_path, run_cli, monkeypatch):
    import webbrowser
    opened = []
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url) or True)
    code, out, err = run_cli("report", runs["ddpm"], "--out", tmp_path / "r.html", "--open")
    assert code == 0, err
    assert opened == [(tmp_path / "r.html").resolve().as_uri()]
