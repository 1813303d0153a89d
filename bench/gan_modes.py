"""Mode coverage of generated digits: classify samples with a classifier trained on real digits.

    python bench/gan_modes.py RUN_DIR [RUN_DIR ...] [--n 1000] [--label K]

Trains (once, cached in memory) a scikit-learn MLP on ../shared/data/mnist-4k, then for each run
draws N samples (for conditional runs: all with --label K, or round-robin over the classes) and
prints the class histogram, the number of classes covered (>= 2% of samples), the entropy of the
class distribution (log2(10) = 3.32 is perfectly even), the classifier's mean confidence and the
share of samples it gives a confidence above 0.9 (real held-out digits: 0.90).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
MNIST4K = REPO.parent / "shared" / "data" / "mnist-4k"


def reference_classifier():
    from sklearn.neural_network import MLPClassifier

    from latentforge.data import load_data
    ds = load_data(str(MNIST4K))
    x = ds.x.reshape(len(ds), -1)
    clf = MLPClassifier(hidden_layer_sizes=(256,), max_iter=60, random_state=0).fit(x[:3500], ds.y[:3500])
    return clf, float(clf.score(x[3500:], ds.y[3500:]))


def coverage(clf, images: np.ndarray) -> dict:
    proba = clf.predict_proba(images.reshape(len(images), -1))
    pred = proba.argmax(1)
    hist = np.bincount(pred, minlength=10)
    p = hist / hist.sum()
    entropy = float(-(p[p > 0] * np.log2(p[p > 0])).sum())
    return {"histogram": hist.tolist(), "classes_covered": int((p >= 0.02).sum()), "entropy_bits": round(entropy, 3),
            "mean_confidence": round(float(proba.max(1).mean()), 3),
            "conf_gt_0_9": round(float((proba.max(1) > 0.9).mean()), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--label", type=int)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    from latentforge.train import load_run
    clf, acc = reference_classifier()
    print(f"reference classifier: held-out accuracy {acc:.3f} on real digits")
    for r in a.runs:
        run = load_run(r)
        labels = None
        if run.model.uses_labels:
            labels = torch.full((a.n,), a.label) if a.label is not None else torch.arange(a.n) % run.model.config.n_classes
        with torch.no_grad():
            x = run.model.sample(a.n, labels, generator=torch.Generator().manual_seed(a.seed)).numpy()
        res = coverage(clf, x)
        if a.label is not None:
            res["share_of_label"] = round(res["histogram"][a.label] / a.n, 3)
        print(json.dumps({"run": r, "model": run.name, **res}))


if __name__ == "__main__":
    main()
