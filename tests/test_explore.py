"""latentforge explore: every route and every bad request through the ASGI test client, the CLI
server (started for real, waited for by its `serving` line, stopped with Ctrl-C), and the mapping
code it shares with `plot tsne`."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from latentforge.models.vae import ConditionalVAEConfig
from conftest import REPO, mnist4k_path

pytest.importorskip("starlette", reason="explore's optional dependencies (pip install 'latentforge[explore]')")
pytest.importorskip("httpx", reason="the ASGI test client needs httpx")
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

N_POINTS = 300          # points served in these tests (a seeded subsample of mnist-4k)


def _train(name: str, out: Path, **overrides):
    from latentforge.train import train
    return train(name, str(mnist4k_path()), out=out, overrides={"epochs": 1, **overrides}, progress=False,
                 device="cpu", overwrite=True, log=lambda m: None)


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    """Tiny runs on mnist-4k, one per kind of capability."""
    base = tmp_path_factory.mktemp("explore-runs")
    _train("stacked-ae", base / "ae")
    _train("vae", base / "vae")
    _train("conditional-vae", base / "cvae")
    _train("linear-ae", base / "lin", coding_size=2)
    _train("hashing-ae", base / "hash")
    _train("gan", base / "gan")
    from latentforge.data import load_data
    from latentforge.train import train
    train("stylegan", load_data(str(mnist4k_path())).subset(slice(0, 64)), out=base / "sg",
          overrides={"epochs": 1, "channels": [16, 8], "mapping_layers": 2}, progress=False, device="cpu",
          overwrite=True, log=lambda m: None)
    return base


NAMES = ("ae", "vae", "cvae", "lin", "hash", "gan", "sg")
CVAE_CODING = ConditionalVAEConfig.coding_size          # the conditional VAE's default code width


@pytest.fixture(scope="module")
def runs(runs_dir):
    from latentforge.explore.state import load_runs
    return load_runs([runs_dir / n for n in NAMES], max_points=N_POINTS, method="pca", log=lambda m: None)


@pytest.fixture(scope="module")
def client(runs):
    from starlette.testclient import TestClient

    from latentforge.explore.server import create_app
    with TestClient(create_app(runs, log=lambda m: None)) as c:
        yield c


def _png(content: bytes):
    from PIL import Image
    im = Image.open(io.BytesIO(content))
    assert im.format == "PNG"
    return np.asarray(im)


def _err(resp, status: int, *words: str) -> str:
    assert resp.status_code == status, resp.text
    msg = resp.json()["error"]
    assert "\n" not in msg and msg
    for w in words:
        assert w in msg, msg
    return msg


# ------------------------------------------------------------------------------ the page and runs
def test_page_and_static_files(client):
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert 'src="static/app.js"' in r.text and "http" not in r.text.split("<body>")[1]     # no CDN
    for name, kind in (("app.js", "javascript"), ("style.css", "css")):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"]
    _err(client.get("/static/..%2F..%2Fserver.py"), 404)
    _err(client.get("/static/nothing.js"), 404, "unknown file")


def test_runs_and_capabilities(client):
    rs = client.get("/api/runs").json()
    assert [r["index"] for r in rs] == list(range(len(NAMES)))
    by = {r["name"]: r for r in rs}
    assert {"model", "data", "capabilities"} <= set(by["ae"])
    caps = {n: {k for k, v in by[n]["capabilities"].items() if v} for n in NAMES}
    assert {"map", "encode", "reconstruct", "decode", "interpolate", "images", "upload"} <= caps["ae"]
    assert not {"sample", "plane", "hash", "slerp"} & caps["ae"]
    assert {"sample", "slerp", "interpolate"} <= caps["vae"]
    assert {"sample", "conditional"} <= caps["cvae"]
    assert "plane" in caps["lin"] and by["lin"]["methods"] == ["latent"]
    assert "hash" in caps["hash"] and "hash" not in caps["vae"]
    assert {"sample", "decode"} <= caps["gan"] and not {"map", "encode", "images", "truncation"} & caps["gan"]
    assert by["ae"]["n"] == N_POINTS and by["ae"]["code_width"] == 30 and by["ae"]["image_hw"] == [28, 28]
    assert by["vae"]["interpolation"] == "slerp" and by["ae"]["interpolation"] == "linear"


# ------------------------------------------------------------------------------ maps
def test_map_json_and_cache(client, runs, runs_dir):
    r = client.get("/api/runs/0/map?method=pca")
    assert r.status_code == 200
    m = r.json()
    assert set(m) >= {"x", "y", "label", "index"} and m["method"] == "pca"
    assert len(m["x"]) == len(m["y"]) == len(m["label"]) == len(m["index"]) == N_POINTS
    assert m["index"] == sorted(m["index"]) and len(set(m["index"])) == N_POINTS
    assert all(isinstance(v, int) and 0 <= v <= 9 for v in m["label"])
    cached = list((runs_dir / "ae" / "explore").glob("map-pca-*.npy"))
    assert len(cached) == 1
    assert np.allclose(np.load(cached[0])[:, 0], m["x"], atol=1e-4)
    # the map is the PCA of the served codings
    from latentforge.report.embedding import pca_2d
    assert np.allclose(pca_2d(runs[0].codes)[:, 1], m["y"], atol=1e-3)
    assert client.get("/api/runs/0/map").json() == m          # the default method: pca here
    # 2-D codings are shown as they are, whatever the method asked
    lin = client.get("/api/runs/3/map?method=tsne").json()
    assert lin["method"] == "latent"
    assert np.allclose(np.c_[lin["x"], lin["y"]], runs[3].codes, atol=1e-4)


def test_map_tsne_small(client, runs):
    m = client.get("/api/runs/1/map?method=tsne").json()
    xy = np.c_[m["x"], m["y"]]
    assert m["method"] == "tsne" and xy.shape == (N_POINTS, 2) and np.isfinite(xy).all()
    # t-SNE keeps neighbourhoods: a point's nearest map neighbour is mostly among its 10 nearest codings
    codes = runs[1].codes
    d_code = ((codes[:, None] - codes[None]) ** 2).sum(-1)
    d_map = ((xy[:, None] - xy[None]) ** 2).sum(-1)
    np.fill_diagonal(d_code, np.inf)
    np.fill_diagonal(d_map, np.inf)
    near = np.argsort(d_code, 1)[:, :10]
    hits = np.mean([d_map[i].argmin() in near[i] for i in range(len(xy))])
    assert hits > 0.5, hits


# ------------------------------------------------------------------------------ images and points
def test_images_reconstructions_sprites(client, runs):
    idx = runs[0].idx
    img = _png(client.get(f"/api/runs/0/images/{idx[3]}.png").content)
    assert img.shape == (28, 28)
    expected = np.round(runs[0].ds.x[idx[3]].reshape(28, 28) * 255).astype(np.uint8)
    assert np.array_equal(img, expected)
    rec = _png(client.get(f"/api/runs/0/reconstructions/{idx[3]}.png").content)
    assert rec.shape == (28, 28) and not np.array_equal(rec, img)
    assert np.abs(rec.astype(int) - img.astype(int)).mean() < 60       # a reconstruction, not noise
    sheet = _png(client.get("/api/runs/0/sprites/0.png").content)
    assert sheet.shape == (28 * 10, 28 * 32)                          # 300 thumbnails, 32 a row
    assert np.array_equal(sheet[:28, 3 * 28:4 * 28], img)             # map order: point 3 is cell 3


def test_point_neighbours_and_hash(client, runs):
    idx = runs[0].idx
    p = client.get(f"/api/runs/0/points/{idx[7]}").json()
    assert p["index"] == idx[7] and len(p["code"]) == 30 and len(p["neighbours"]) == 8
    assert p["neighbour_distances"] == sorted(p["neighbour_distances"]) and idx[7] not in p["neighbours"]
    codes = runs[0].codes
    d = ((codes - codes[7]) ** 2).sum(1)
    d[7] = np.inf
    assert p["neighbours"][0] == idx[int(d.argmin())]
    assert p["error"] > 0 and 0 <= p["percentile"] <= 100
    h = client.get(f"/api/runs/4/points/{runs[4].idx[0]}").json()
    assert len(h["hash"]) == 16 and set(h["hash"]) <= {"0", "1"}
    for j in h["same_hash"][:5]:
        assert client.get(f"/api/runs/4/points/{j}").json()["hash"] == h["hash"]
    assert "hash" not in p


# ------------------------------------------------------------------------------ decode, interpolate, sample
def test_decode(client, runs):
    codes = runs[0].codes[:5].tolist()
    grid = _png(client.post("/api/runs/0/decode", json={"codes": codes}).content)
    assert grid.shape == (2 * 29 + 1, 3 * 29 + 1)                     # 5 images, 3 columns, 1 px apart
    rec = _png(client.get(f"/api/runs/0/reconstructions/{runs[0].idx[0]}.png").content)
    assert np.array_equal(grid[1:29, 1:29], rec)                      # decode(encode(x)) = reconstruction
    r = client.post("/api/runs/0/decode", json={"codes": codes, "ncols": 5})
    assert r.headers["server-timing"].startswith("app;dur=")           # the server's own time, for benchmarks
    row = _png(r.content)
    assert row.shape == (30, 5 * 29 + 1)
    gan = _png(client.post("/api/runs/5/decode", json={"codes": [[0.0] * 30]}).content)
    assert gan.shape == (30, 30)
    plane = _png(client.post("/api/runs/3/decode", json={"codes": [[0.5, -1.0]]}).content)
    assert plane.shape == (30, 30)
    cvae = client.post("/api/runs/2/decode", json={"codes": [[0.0] * runs[2].codes.shape[1]], "label": 3})
    assert cvae.status_code == 200, cvae.text


F32 = {"content-type": "application/octet-stream"}


def _f32(codes) -> bytes:
    return np.asarray(codes, "<f4").tobytes()


def test_decode_binary(client, runs):
    """Binary codes (n x width little-endian float32, ?n=) decode to the very PNG their JSON does."""
    codes = runs[0].codes[:5]
    as_json = client.post("/api/runs/0/decode", json={"codes": codes.tolist(), "ncols": 5})
    r = client.post("/api/runs/0/decode?n=5&ncols=5", content=_f32(codes), headers=F32)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
    assert r.content == as_json.content and r.headers["server-timing"].startswith("app;dur=")
    assert _png(client.post("/api/runs/0/decode?n=5", content=_f32(codes), headers=F32).content).shape == (59, 88)
    one = client.post("/api/runs/3/decode?n=1", content=_f32([[0.5, -1.0]]),
                      headers={"content-type": "Application/Octet-Stream; charset=binary"})   # a 2-D plane point
    assert one.content == client.post("/api/runs/3/decode", json={"codes": [[0.5, -1.0]]}).content
    width = runs[2].codes.shape[1]
    cvae = client.post("/api/runs/2/decode?n=2&label=3", content=_f32(np.zeros((2, width))), headers=F32)
    assert cvae.status_code == 200 and _png(cvae.content).shape == (30, 59)
    big = np.random.default_rng(0).normal(size=(256, 30))                  # the most a request may ask for
    assert client.post("/api/runs/0/decode?n=256", content=_f32(big), headers=F32).status_code == 200


@pytest.mark.parametrize("query, body, status, words", [
    ("", _f32(np.zeros((2, 30))), 400, ["?n=N"]),
    ("?n=3", _f32(np.zeros((2, 30))), 400, ["n=3", "width 30", "360 bytes", "got 240"]),
    ("?n=2", _f32(np.zeros((2, 30))) + b"\0", 400, ["240 bytes", "got 241"]),
    ("?n=2", b"", 400, ["got 0 bytes"]),
    ("?n=1", _f32(np.zeros((1, 29))), 400, ["width 30", "got 116"]),
    ("?n=1", np.zeros((1, 30)).tobytes(), 400, ["float32", "got 240"]),                # float64 is not it
    ("?n=two", _f32(np.zeros((2, 30))), 400, ["n: expected an integer"]),
    ("?n=0", b"", 400, ["n 0", "1..256"]),
    ("?n=-1", b"", 400, ["n -1", "1..256"]),
    ("?n=257", _f32(np.zeros((257, 30))), 400, ["n 257", "1..256"]),
    ("?n=2", _f32([[0.0] * 30, [0.0] * 29 + [np.nan]]), 400, ["codes[1]", "finite"]),
    ("?n=1", _f32([[np.inf] + [0.0] * 29]), 400, ["codes[0]", "finite"]),
    ("?n=1&labels=2", _f32(np.zeros((1, 30))), 400, ["unknown query parameter", "'labels'", "n, label, ncols"]),
    ("?n=1&label=1", _f32(np.zeros((1, 30))), 400, ["not conditional"]),
    ("?n=1&ncols=0", _f32(np.zeros((1, 30))), 400, ["ncols 0"]),
    ("?n=1&ncols=x", _f32(np.zeros((1, 30))), 400, ["ncols: expected an integer"]),
])
def test_bad_binary_decodes(client, query, body, status, words):
    _err(client.post("/api/runs/0/decode" + query, content=body, headers=F32), status, *words)
    assert client.get("/api/runs").status_code == 200


def test_bad_binary_decodes_other_runs(client, runs):
    width = runs[2].codes.shape[1]
    _err(client.post("/api/runs/2/decode?n=1", content=_f32(np.zeros((1, width))), headers=F32), 400, "conditional")
    _err(client.post("/api/runs/2/decode?n=1&label=10", content=_f32(np.zeros((1, width))), headers=F32),
         400, "label 10", "0..9")
    _err(client.post("/api/runs/6/decode?n=1", content=_f32(np.zeros((1, 30))), headers=F32), 400,
         "width 64", "256 bytes")                                        # StyleGAN's latents are 64-d
    _err(client.post("/api/runs/9/decode?n=1", content=_f32(np.zeros((1, 30))), headers=F32), 404, "unknown run 9")
    _err(client.post("/api/runs/0/decode?n=1", content=b"\0" * (10 * 1024 * 1024 + 1), headers=F32), 413, "10 MB")
    # float32 sent without its content type is read as JSON, and the error says what is missing
    _err(client.post("/api/runs/0/decode?n=1", content=_f32(np.ones((1, 30)))), 400, "malformed JSON",
         "Content-Type: application/octet-stream")
    # a JSON body sent as octet-stream is read as float32, and refused for its length, not parsed
    _err(client.post("/api/runs/0/decode?n=1", content=b'{"codes": [[0.0]]}', headers=F32), 400, "got 18 bytes")


def test_interpolate(client, runs):
    a, b = int(runs[0].idx[0]), int(runs[0].idx[1])
    strip = _png(client.post("/api/runs/0/interpolate", json={"a": a, "b": b, "steps": 6}).content)
    assert strip.shape == (30, 6 * 29 + 1)
    rec_a = _png(client.get(f"/api/runs/0/reconstructions/{a}.png").content)
    rec_b = _png(client.get(f"/api/runs/0/reconstructions/{b}.png").content)
    assert np.array_equal(strip[1:29, 1:29], rec_a) and np.array_equal(strip[1:29, -29:-1], rec_b)
    lin = client.post("/api/runs/1/interpolate", json={"a": a, "b": b, "method": "linear"})
    slerp = client.post("/api/runs/1/interpolate", json={"a": a, "b": b})
    assert lin.status_code == slerp.status_code == 200 and lin.content != slerp.content   # vae: slerp by default
    assert client.post("/api/runs/2/interpolate", json={"a": a, "b": b, "steps": 3}).status_code == 200


def test_sample(client):
    one = client.post("/api/runs/1/sample", json={"n": 16, "seed": 0, "label": None, "truncation": None})
    assert one.status_code == 200 and _png(one.content).shape == (4 * 29 + 1, 4 * 29 + 1)
    assert client.post("/api/runs/1/sample", json={"n": 16, "seed": 0}).content == one.content
    assert client.post("/api/runs/1/sample", json={"n": 16, "seed": 1}).content != one.content
    assert _png(client.post("/api/runs/1/sample", json={}).content).shape == (4 * 29 + 1, 4 * 29 + 1)
    c3 = client.post("/api/runs/2/sample", json={"n": 4, "label": 3})
    c5 = client.post("/api/runs/2/sample", json={"n": 4, "label": 5})
    assert c3.status_code == c5.status_code == 200 and c3.content != c5.content
    assert client.post("/api/runs/2/sample", json={"n": 10}).status_code == 200       # one of each class
    assert client.post("/api/runs/5/sample", json={"n": 8, "seed": 2}).status_code == 200


def test_style_mixing(client, runs):
    rs = client.get("/api/runs").json()
    assert rs[6]["capabilities"]["mix"] and rs[6]["capabilities"]["truncation"] and rs[6]["n_styles"] == 8
    assert not any(r["capabilities"]["mix"] for r in rs[:6])
    one = client.post("/api/runs/6/mix", json={"seed": 0, "n": 3, "crossover": 2})
    grid = _png(one.content)
    assert grid.shape == (4 * 29 + 1, 4 * 29 + 1)
    assert not grid[1:29, 1:29].any()                                   # the corner is blank
    assert client.post("/api/runs/6/mix", json={"seed": 0, "n": 3, "crossover": 2}).content == one.content
    other = _png(client.post("/api/runs/6/mix", json={"seed": 0, "n": 3, "crossover": 6}).content)
    assert np.array_equal(other[:, :29], grid[:, :29]) and np.array_equal(other[:29], grid[:29])   # same sources
    assert not np.array_equal(other, grid)                                                          # other mixes
    assert client.post("/api/runs/6/mix", json={"truncation": 0.5}).status_code == 200
    _err(client.post("/api/runs/6/mix", json={"crossover": 0}), 400, "crossover 0", "1..7")
    _err(client.post("/api/runs/6/mix", json={"n": 9}), 400, "n 9")
    _err(client.post("/api/runs/1/mix", json={}), 400, "cannot mix styles")
    assert client.post("/api/runs/6/sample", json={"n": 4, "truncation": 0.7}).status_code == 200


# ------------------------------------------------------------------------------ uploads
def _png_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_encode_upload(client, runs):
    idx = runs[0].idx
    content = client.get(f"/api/runs/0/images/{idx[5]}.png").content
    r = client.post("/api/runs/0/encode?method=pca", files={"image": ("x.png", content, "image/png")})
    assert r.status_code == 200, r.text
    out = r.json()
    assert np.allclose(out["code"], runs[0].codes[5], atol=1e-4)       # the same image, the same coding
    m = client.get("/api/runs/0/map?method=pca").json()
    assert abs(out["x"] - m["x"][5]) < 1e-2 and abs(out["y"] - m["y"][5]) < 1e-2
    p = client.get(f"/api/runs/0/points/{idx[5]}").json()
    assert out["score"] == pytest.approx(p["error"], rel=1e-4) and out["percentile"] == pytest.approx(p["percentile"])
    assert out["reconstruction"].startswith("data:image/png;base64,")
    assert idx[5] == out["neighbours"][0]
    # raw body, JPEG; a blank image is an anomaly for a digit autoencoder... or at least scored
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.full((28, 28), 255, np.uint8)).save(buf, format="JPEG")
    blank = client.post("/api/runs/0/encode", content=buf.getvalue(), headers={"content-type": "image/jpeg"}).json()
    assert blank["percentile"] > 99 and blank["score"] > out["score"]
    # t-SNE maps place an upload by its nearest codings
    t = client.post("/api/runs/1/encode?method=tsne", files={"image": ("x.png", content, "image/png")}).json()
    assert np.isfinite([t["x"], t["y"]]).all() and t["method"] == "tsne"
    cv = client.post("/api/runs/2/encode", files={"image": ("x.png", content, "image/png")}, data={"label": "3"})
    assert cv.status_code == 200


def test_bad_uploads(client):
    good = _png_bytes(np.zeros((28, 28), np.uint8))
    _err(client.post("/api/runs/0/encode", files={"image": ("x.png", _png_bytes(np.zeros((30, 28), np.uint8)),
                                                             "image/png")}), 400, "28x30", "28x28")
    _err(client.post("/api/runs/0/encode", files={"image": ("x.png", b"not an image at all", "image/png")}),
         400, "not a readable PNG or JPEG")
    _err(client.post("/api/runs/0/encode", files={"other": ("x.png", good, "image/png")}), 400, "\"image\"")
    _err(client.post("/api/runs/0/encode", content=b""), 400, "empty")
    _err(client.post("/api/runs/0/encode", content=b"\0" * (10 * 1024 * 1024 + 1)), 413, "10 MB")
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(buf, format="GIF")
    _err(client.post("/api/runs/0/encode", content=buf.getvalue()), 400, "PNG or JPEG", "GIF")
    # a decompression bomb: a tiny file that claims a huge image; refused before decoding
    bomb = io.BytesIO()
    Image.new("L", (20000, 20000)).save(bomb, format="PNG")
    assert len(bomb.getvalue()) < 1_000_000
    _err(client.post("/api/runs/0/encode", content=bomb.getvalue()), 400)
    _err(client.post("/api/runs/2/encode", content=good), 400, "conditional", "label")
    _err(client.post("/api/runs/5/encode", content=good), 400, "cannot encode")
    assert client.get("/api/runs").status_code == 200                 # and the server goes on


# ------------------------------------------------------------------------------ bad requests
@pytest.mark.parametrize("method,path,body,status,words", [
    ("GET", "/api/runs/9/map", None, 404, ["unknown run 9"]),
    ("GET", "/api/runs/abc/map", None, 404, ["unknown run"]),
    ("GET", "/api/runs/-1/map", None, 404, ["unknown run"]),
    ("GET", "/api/runs/0/map?method=bogus", None, 400, ["bogus", "tsne"]),
    ("GET", "/api/runs/5/map", None, 400, ["no encoder"]),
    ("GET", "/api/runs/0/images/999999.png", None, 404, ["unknown index 999999"]),
    ("GET", "/api/runs/0/images/1.jpg", None, 404, ["INDEX.png"]),
    ("GET", "/api/runs/0/images/..%2Fcheckpoint.safetensors", None, 404, []),
    ("GET", "/api/runs/0/reconstructions/x.png", None, 404, ["unknown index"]),
    ("GET", "/api/runs/0/sprites/99.png", None, 404, ["sprite sheet"]),
    ("GET", "/api/runs/0/points/999999", None, 404, ["unknown index"]),
    ("GET", "/api/runs/5/images/0.png", None, 400, ["cannot show images"]),
    ("GET", "/api/nothing", None, 404, ["no such route"]),
    ("GET", "/api/runs/0/decode", None, 405, ["method not allowed"]),
    ("POST", "/api/runs/0/decode", b"{not json", 400, ["malformed JSON"]),
    ("POST", "/api/runs/0/decode", b"[1, 2]", 400, ["JSON object"]),
    ("POST", "/api/runs/0/decode", {"codes": [[0.0] * 29]}, 400, ["expected 30 numbers"]),
    ("POST", "/api/runs/0/decode", {"codes": []}, 400, ["non-empty"]),
    ("POST", "/api/runs/0/decode", {"codes": [[None] * 30]}, 400, ["finite numbers"]),
    # strict JSON (RFC 8259): NaN is not a JSON value
    ("POST", "/api/runs/0/decode", b'{"codes": [[NaN' + b", 0" * 29 + b"]]}", 400, ["malformed JSON"]),
    ("POST", "/api/runs/0/decode", {"codes": [[0.0] * 30] * 257}, 400, ["at most 256"]),
    ("POST", "/api/runs/0/decode", {"code": [[0.0] * 30]}, 400, ["unknown field", "codes"]),
    ("POST", "/api/runs/0/decode", {}, 400, ["missing field \"codes\""]),
    ("POST", "/api/runs/0/decode", {"codes": [[0.0] * 30], "label": 1}, 400, ["not conditional"]),
    ("POST", "/api/runs/2/decode", {"codes": [[0.0] * CVAE_CODING]}, 400, ["conditional"]),
    ("POST", "/api/runs/2/decode", {"codes": [[0.0] * CVAE_CODING], "label": 10}, 400, ["label 10", "0..9"]),
    ("POST", "/api/runs/0/interpolate", {"a": 0}, 400, ["missing field \"b\""]),
    ("POST", "/api/runs/0/interpolate", {"a": 0, "b": 999999}, 404, ["unknown index 999999"]),
    ("POST", "/api/runs/0/interpolate", {"a": "x", "b": 1}, 400, ["a: expected an integer"]),
    ("POST", "/api/runs/0/interpolate", {"a": 0, "b": 1, "steps": 1}, 400, ["steps 1", "2..64"]),
    ("POST", "/api/runs/0/interpolate", {"a": 0, "b": 1, "method": "cubic"}, 400, ["linear or slerp"]),
    ("POST", "/api/runs/5/interpolate", {"a": 0, "b": 1}, 400, ["cannot interpolate"]),
    ("POST", "/api/runs/0/sample", {"n": 4}, 400, ["cannot generate"]),
    ("POST", "/api/runs/1/sample", {"n": 0}, 400, ["n 0"]),
    ("POST", "/api/runs/1/sample", {"n": 1000}, 400, ["n 1000"]),
    ("POST", "/api/runs/1/sample", {"seed": -1}, 400, ["seed -1"]),
    ("POST", "/api/runs/1/sample", {"label": 2}, 400, ["not conditional"]),
    ("POST", "/api/runs/1/sample", {"truncation": 0.7}, 400, ["no truncation trick"]),
    ("POST", "/api/runs/1/sample", {"guidance": 2}, 400, ["without guidance"]),
    ("POST", "/api/runs/1/sample", {"n": "many"}, 400, ["n: expected an integer"]),
    ("POST", "/api/runs/2/sample", {"label": -1}, 400, ["label -1"]),
])
def test_bad_requests(client, runs, method, path, body, status, words):
    if "interpolate" in path and isinstance(body, dict):
        body = {k: (int(runs[0].idx[v]) if k in ("a", "b") and isinstance(v, int) and v < N_POINTS else v)
                for k, v in body.items()}
    if isinstance(body, bytes):
        r = client.request(method, path, content=body, headers={"content-type": "application/json"})
    else:
        r = client.request(method, path, json=body)
    _err(r, status, *words)
    assert client.get("/api/runs").status_code == 200


def test_token(runs):
    from starlette.testclient import TestClient

    from latentforge.explore.server import create_app
    with TestClient(create_app(runs[:1], token="s3cret", log=lambda m: None)) as c:
        assert c.get("/").status_code == 200                           # the page itself holds no data
        _err(c.get("/api/runs"), 403, "token")
        _err(c.get("/api/runs", headers={"X-Token": "wrong"}), 403, "token")
        assert c.get("/api/runs", headers={"X-Token": "s3cret"}).status_code == 200
        assert c.get(f"/api/runs/0/images/{runs[0].idx[0]}.png?token=s3cret").status_code == 200
        _err(c.post("/api/runs/0/decode", json={"codes": [[0.0] * 30]}), 403)
        _err(c.post("/api/runs/0/decode?n=1", content=_f32(np.zeros((1, 30))), headers=F32), 403)
        ok = c.post("/api/runs/0/decode?n=1&token=s3cret", content=_f32(np.zeros((1, 30))), headers=F32)
        assert ok.status_code == 200 and _png(ok.content).shape == (30, 30)


# ------------------------------------------------------------------------------ the command
def _start(args: list[str]) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "latentforge", "explore", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    line = proc.stdout.readline()          # blocks until the server says it is ready (or exits)
    if not line.startswith("serving "):
        proc.kill()
        raise AssertionError(f"no serving line: {line!r} {proc.stderr.read()}")
    return proc, line


def _stop(proc: subprocess.Popen) -> tuple[int, str, str]:
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def test_cli_serves_and_stops_cleanly(runs_dir):
    proc, line = _start([str(runs_dir / "ae"), str(runs_dir / "gan"), "--method", "pca", "--max-points", "200",
                         "--port", "0"])
    try:
        assert line.rstrip("\n").startswith("serving http://127.0.0.1:") and line.endswith("/\n")
        url = line.split()[1]
        assert int(url.rsplit(":", 1)[1].rstrip("/")) > 0               # --port 0: the real port is printed
        with urllib.request.urlopen(url + "api/runs", timeout=30) as r:
            rs = json.load(r)
        assert [r["model"] for r in rs] == ["stacked-ae", "gan"] and rs[0]["n"] == 200
        with urllib.request.urlopen(url + "api/runs/0/map", timeout=120) as r:
            assert len(json.load(r)["x"]) == 200
        req = urllib.request.Request(url + "api/runs/0/decode?n=2", data=_f32(np.zeros((2, 30))), headers=F32)
        with urllib.request.urlopen(req, timeout=30) as r:                # binary codes, the real server
            assert _png(r.read()).shape == (30, 59)
    finally:
        rc, out, err = _stop(proc)
    assert rc in (0, 130), err
    assert "Traceback" not in err and out == "", (out, err)


def test_cli_errors(run_cli, runs_dir, tmp_path):
    code, out, err = run_cli("explore", str(tmp_path / "missing"), "--port", "0")
    assert code == 2 and "no such run folder" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli("explore", str(runs_dir / "ae"), "--method", "mds", "--port", "0")
    assert code == 2 and "--method 'mds'" in err
    code, out, err = run_cli("explore", str(runs_dir / "ae"), str(runs_dir / "ae"), "--port", "0")
    assert code == 2 and "twice" in err
    code, _, err = run_cli("explore", str(runs_dir / "ae"), "--data", "fashion-mnist", "--port", "0")
    assert code == 2 and err.count("\n") == 1


# ------------------------------------------------------------------------------ the mapping code
def test_embedding_methods():
    from latentforge.errors import ConfigError, DataError
    from latentforge.report.embedding import embed, pca_2d, tsne_2d
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6)).astype(np.float32) * np.array([5, 3, 1, 1, 1, 1], np.float32)
    p = pca_2d(x)
    from sklearn.decomposition import PCA
    ref = PCA(2).fit_transform(x)
    assert np.allclose(np.abs(p), np.abs(ref), atol=1e-3)
    assert embed(x[:, :2], "tsne").method == "latent"
    same = embed(np.ones((20, 4)), "tsne")
    assert same.method == "identical" and not same.xy.any()
    with pytest.raises(ConfigError, match="must be one of"):
        embed(x, "mds")
    with pytest.raises(DataError, match="NaN"):
        embed(np.full((10, 3), np.nan), "pca")
    # above fit_max: fitted on a subsample, the rest placed near their neighbours (bounded memory)
    blobs = np.concatenate([rng.normal(c, 0.3, size=(150, 6)) for c in (0, 6, 12)]).astype(np.float32)
    xy, fitted = tsne_2d(blobs, fit_max=120, seed=0)
    assert fitted == 120 and xy.shape == (450, 2) and np.isfinite(xy).all()
    centres = np.stack([xy[k * 150:(k + 1) * 150].mean(0) for k in range(3)])
    spread = max(xy[k * 150:(k + 1) * 150].std(0).max() for k in range(3))
    gaps = min(np.linalg.norm(centres[i] - centres[j]) for i in range(3) for j in range(i + 1, 3))
    assert gaps > 2 * spread                                         # the three blobs stay apart
    again, _ = tsne_2d(blobs, fit_max=120, seed=0)
    assert np.array_equal(xy, again)                                 # seeded: the same map


def test_truncation_capability_is_probed():
    """`truncation` shows where sample() accepts it, not where the keyword merely exists."""
    from latentforge.explore.state import capabilities
    from latentforge.models import build_model
    for name, expected in (("stylegan", True), ("gan", False), ("ddpm", False), ("vae", False)):
        model = build_model(name, input_shape=[1, 28, 28]).eval()
        assert capabilities(model, 30, False, False)["truncation"] is expected, name


def test_decode_rejects_what_numpy_would_coerce(client):
    """Booleans and strings are not codes, even where numpy would turn them into numbers."""
    _err(client.post("/api/runs/0/decode", json={"codes": [[True] * 30]}), 400, "finite numbers")
    _err(client.post("/api/runs/0/decode", json={"codes": [[0.5] * 29 + [True]]}), 400, "codes[0]", "True")
    _err(client.post("/api/runs/0/decode", json={"codes": [[0.5] * 30, [False] + [1] * 29]}), 400, "codes[1]")
    _err(client.post("/api/runs/0/decode", json={"codes": [["1"] * 30]}), 400, "finite numbers")
    _err(client.post("/api/runs/0/decode", json={"codes": [[0.0] * 30, [0.0] * 31]}), 400, "codes[1]", "got 31")
    big = b'{"codes": [[1e400' + b", 0" * 29 + b"]]}"                      # beyond a double: not a code
    _err(client.post("/api/runs/0/decode", content=big), 400, "malformed JSON", "infinity")


def test_cli_busy_port(run_cli, runs_dir):
    import socket
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code, _, err = run_cli("explore", str(runs_dir / "ae"), "--port", str(port))
    assert code == 2 and "cannot listen there" in err and err.count("\n") == 1


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 3), (5, 7, 4)])
def test_png_bytes_round_trip(shape):
    from PIL import Image

    from latentforge.explore.state import png_bytes
    a = (np.random.default_rng(0).random(shape) * 255).astype(np.uint8)
    im = Image.open(io.BytesIO(png_bytes(a)))
    assert im.format == "PNG" and np.array_equal(np.asarray(im), a)


def test_transposed_conv_kernel_choice():
    """A layer switched to PyTorch's own transposed-conv kernel computes what the module does
    (an explicit output_size still goes through the module); with an impossible gain none switches."""
    import torch

    from latentforge.explore.kernels import choose_transposed_conv_kernels
    from latentforge.models import build_model
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this PyTorch has no oneDNN: nothing to choose")
    model = build_model("conv-ae", input_shape=[1, 28, 28]).eval()
    z = torch.randn(16, model.coding_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        before = model.decode(z)
        assert choose_transposed_conv_kernels(model, lambda: model.decode(z), min_gain=float("inf")) == []
        switched = choose_transposed_conv_kernels(model, lambda: model.decode(z), min_gain=0.0)
        assert switched == ["dec.0", "dec.1", "dec.2"]
        torch.testing.assert_close(model.decode(z), before, atol=1e-5, rtol=0)
        layer, h = model.dec[0], torch.randn(2, 64, 3, 3)
        assert layer(h, output_size=[8, 8]).shape == (2, 32, 8, 8)        # the module's own output padding


def test_kernel_choice_never_stops_serving(runs, monkeypatch):
    """A decoder that fails on the probe keeps its kernels and says so in one line; the run serves on."""
    notes = []
    run = runs[0]
    monkeypatch.setattr(run, "log", notes.append)
    from latentforge.explore import kernels

    def failing(model, probe, **kw):
        probe()
    monkeypatch.setattr(kernels, "choose_transposed_conv_kernels", failing)
    monkeypatch.setattr(run.model, "decode", lambda *a: (_ for _ in ()).throw(RuntimeError("no probe")))
    assert run.choose_kernels() == []
    assert len(notes) == 1 and "kept the default convolution kernels" in notes[0] and "no probe" in notes[0]


def test_sample_guidance_for_a_guided_ddpm(tmp_path):
    """A DDPM run declares guidance: the page shows the field, ``"guidance": 1`` samples unguided,
    a negative weight is a 400."""
    from starlette.testclient import TestClient

    from latentforge.data import load_data
    from latentforge.explore.server import create_app
    from latentforge.explore.state import load_runs
    from latentforge.train import train
    train("ddpm", load_data(str(mnist4k_path())).subset(slice(0, 32)), out=tmp_path / "dd",
          overrides={"epochs": 2, "channels": 8, "channel_mult": [1, 2], "steps": 50, "sample_steps": 3,
                     "batch_size": 16, "sample_every": 0}, progress=False, device="cpu", log=lambda m: None)
    served = load_runs([tmp_path / "dd"], max_points=N_POINTS, method="pca", log=lambda m: None)
    with TestClient(create_app(served, log=lambda m: None)) as c:
        assert c.get("/api/runs").json()[0]["capabilities"]["guidance"] is True
        guided = c.post("/api/runs/0/sample", json={"n": 4, "seed": 0})
        assert guided.status_code == 200
        assert c.post("/api/runs/0/sample", json={"n": 4, "seed": 0, "guidance": 3}).content == guided.content
        assert c.post("/api/runs/0/sample", json={"n": 4, "seed": 0, "guidance": 1}).content != guided.content
        _err(c.post("/api/runs/0/sample", json={"guidance": -1}), 400, "guidance -1")
