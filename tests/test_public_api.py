"""The public API of ``import latentforge as lf`` works however often and in whatever order it is
called: no name in the package namespace can be replaced by the import of a subpackage.

Each check runs in a fresh interpreter (the order of first imports is what used to break it).
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, tmp_path: Path) -> str:
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300,
                         env={"PYTHONPATH": str(REPO), "PATH": str(Path(sys.executable).parent), "CI": "1",
                              "LATENTFORGE_DATA": str(tmp_path / "cache")})
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


CALLS = """
    import importlib, pkgutil
    import latentforge as lf
    def train(out):
        return lf.train("linear-ae", data(), out=out, overrides={{"epochs": 1, "coding_size": 2}}, overwrite=True)
    def data():
        return lf.load_data("digits").subset(slice(0, 300))
    for step in {steps}:
        if step in ("train", "load"):
            run = train("run") if step == "train" else lf.load_run("run")
            assert isinstance(run, lf.Run) and run.encode(data().x[:5]).shape == (5, 2)
        elif step == "data":
            assert len(data()) == 300 and lf.train_valid_split(data(), 0.5)[0].x.shape == (150, 1, 8, 8)
        elif step == "model":
            assert lf.build_model("stacked-ae", input_shape=[64]).capabilities == \
                lf.get_model_class("stacked-ae").capabilities
        elif step == "names":
            assert "vae" in lf.model_names() and isinstance(lf.list_datasets(), list)
        elif step == "import-all":        # every submodule imported: no public name changes
            before = {{name: getattr(lf, name) for name in lf.__all__}}
            for m in pkgutil.walk_packages(lf.__path__, "latentforge."):
                if m.name != "latentforge.__main__":
                    importlib.import_module(m.name)
            changed = [n for n in lf.__all__ if getattr(lf, n) is not before[n]]
            assert not changed, changed
            assert all(callable(getattr(lf, n)) for n in lf.__all__ if n != "__version__")
            import latentforge.train.trainer as t          # the subpackage stays reachable by its dotted name
            assert t.Trainer is lf.train.trainer.Trainer
    print("ok")
"""


@pytest.mark.parametrize("steps", [
    ["train", "train", "load", "load", "data", "data", "model", "model", "names", "names", "import-all",
     "train", "load"],
    ["load", "load", "data", "model", "names", "train", "train", "load", "names", "data", "model"],
], ids=["train-first", "load-first"])
def test_every_public_name_twice_in_both_orders(tmp_path, steps):
    if steps[0] == "load":       # a run to load before this interpreter trains anything
        import latentforge as lf
        lf.train("linear-ae", lf.load_data("digits").subset(slice(0, 300)), out=tmp_path / "run",
                 overrides={"epochs": 1, "coding_size": 2})
    assert _python(CALLS.format(steps=steps), tmp_path).strip() == "ok"
