"""Figures of the package's layering: import cycles, imports inside functions, capability probes.

    python bench/layering.py [PACKAGE_DIR ...]     # default: latentforge/ of this checkout

* cycles: strongly connected components (more than one module) of the module import graph,
  imports inside functions included, ``if TYPE_CHECKING:`` ones not (tests/test_layers.py);
* function-local imports: import statements inside functions that import from the package
  (all, and outside the command line: ``cli``/``commands``);
* capability probes: ``getattr``/``hasattr`` calls asking a model for a capability or hook by
  name, and the report's ``ctx.has("method")`` probes (what ``Capability`` replaces).
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from test_layers import import_cycles, import_graph  # noqa: E402

PROBED = {"uses_labels", "adversarial", "gaussian_latent", "labels_optional", "epoch_grid", "greedy_stages",
          "fused_sgd_step", "sample", "encode", "decode", "reconstruct", "log_likelihood", "predict_proba",
          "codes_in_unit_interval", "info_metrics", "check_labels", "on_train_step", "on_epoch_start",
          "batch_separable", "separable_batches", "latent", "features"}
PROBE = re.compile(r"\b(?:getattr|hasattr)\([^,()]+(?:\([^()]*\))?,\s*[\"']([a-z_]+)[\"']")


def probes(root: Path) -> int:
    n = 0
    for path in root.rglob("*.py"):
        text = path.read_text()
        n += sum(1 for m in PROBE.finditer(text) if m.group(1) in PROBED)
        n += sum(1 for m in re.finditer(r"ctx\.has\(([^)]*)\)", text) if '"' in m.group(1))
    return n


def main(roots: list[Path]) -> None:
    print(f"{'package':<40} {'cycles':>6} {'in cycles':>9} {'local imports':>13} {'(non-CLI)':>9} {'probes':>6}")
    for root in roots:
        edges, local = import_graph(root)
        cycles = import_cycles(edges)
        non_cli = [m for m, _ in local if not m.startswith((f"{root.name}.cli", f"{root.name}.commands"))]
        print(f"{str(root):<40} {len(cycles):>6} {sum(map(len, cycles)):>9} {len(local):>13} {len(non_cli):>9} "
              f"{probes(root):>6}")
        for c in cycles:
            print("   cycle:", " <-> ".join(c))


if __name__ == "__main__":
    main([Path(a).resolve() for a in sys.argv[1:]] or [REPO / "latentforge"])
