"""MoA classifier and bootstrap intervals: checked against what the data make true."""

import json

import numpy as np
import pandas as pd

from benchmark.cli import main
from benchmark.metrics.moa import MoAClassifier, MoAConfig

CFG = MoAConfig(backbone="resnet10t", epochs=8, batch_size=32, lr=3e-3)


def _blobs(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """Three classes that differ in which channel carries a bright square, over noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.integers(0, 90, (n, 16, 16, 3)).astype(np.uint8)
    for i, c in enumerate(y):
        r, q = rng.integers(0, 8, 2)
        x[i, r: r + 8, q: q + 8, c] = 230
    return x, [f"moa{c}" for c in y]


def test_separable_classes_are_learned_and_shuffled_labels_are_at_chance():
    x, y = _blobs(480, 0)
    xt, yt = _blobs(300, 1)
    clf = MoAClassifier.fit(x, y, CFG)
    assert (clf.predict(xt) == np.array(yt)).mean() > 0.9
    # labels shuffled away from the images: nothing to learn. (Shuffling the labels of clusterable images is
    # not enough: the classifier then maps each cluster to a random label, and a chance alignment of those
    # maps moves accuracy in steps of 1/3; so the images carry no class signal here at all.)
    rng = np.random.default_rng(2)
    noise = rng.integers(0, 256, (480, 16, 16, 3)).astype(np.uint8)
    shuffled = list(rng.permutation(y))
    test_noise = rng.integers(0, 256, (300, 16, 16, 3)).astype(np.uint8)
    acc = (MoAClassifier.fit(noise, shuffled, CFG).predict(test_noise) == np.array(yt)).mean()
    assert abs(acc - 1 / 3) < 0.1  # chance, within 3.7 binomial sd at n=300


def test_saved_classifier_predicts_the_same_and_its_hash_is_stable(tmp_path):
    x, y = _blobs(96, 3)
    clf = MoAClassifier.fit(x, y, MoAConfig(backbone="resnet10t", epochs=1, batch_size=32))
    clf.save(tmp_path / "moa.pt")
    again = MoAClassifier.load(tmp_path / "moa.pt")
    assert np.array_equal(again.predict(x), clf.predict(x)) and again.weights_sha256 == clf.weights_sha256


def test_the_classifier_does_not_depend_on_the_thread_count_and_leaves_it_as_it_was():
    import torch

    x, y = _blobs(256, 4)
    cfg = MoAConfig(backbone="resnet18", epochs=2, batch_size=64)
    before = torch.get_num_threads()
    try:
        hashes = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            hashes.append(MoAClassifier.fit(x, y, cfg).weights_sha256)
            assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    assert hashes[0] == hashes[1]


def test_runs_score_moa_accuracy_with_ceiling_and_provenance(tmp_path, data_dir, tiny_data):
    runs = tmp_path / "runs"
    for method in ("identity", "oracle"):
        assert main(["run", "--method", method, "--task", "synthetic-tiny", "--out", str(runs), "--data-dir",
                     str(data_dir), "--features", "tiny,moa"]) == 0
    rows = {}
    for run in (p for p in runs.iterdir() if not p.name.startswith(".")):
        m = pd.read_csv(run / "metrics.csv")
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["features"]["moa"]["weights_sha256"] == m[m.metric == "moa_acc"]["extractor_sha256"].iloc[0]
        rows[manifest["method"]] = m.set_index(["metric", "perturbation"], drop=False)
    for k, v in rows.items():
        for metric in ("moa_acc", "moa_acc_real"):
            r = v[(v.metric == metric) & v.perturbation.isna()].iloc[0]
            assert r.ci_low <= r.value <= r.ci_high and r.n_gen > 0 and r.n_real > 0
        per_moa = v[v.metric == "moa_acc_by_moa"]
        assert per_moa["n_gen"].sum() == v[(v.metric == "moa_acc") & v.perturbation.isna()].iloc[0].n_gen
    # the ceiling is scored on the same real images in every run
    assert rows["identity"][rows["identity"].metric == "moa_acc_real"]["value"].tolist() == \
        rows["oracle"][rows["oracle"].metric == "moa_acc_real"]["value"].tolist()


def test_a_cached_classifier_is_reused_only_under_the_same_recipe(tmp_path, tiny_data, monkeypatch):
    """The cache key holds what decides the weights: a classifier trained under another thread count (or other
    training code) is trained again, not reused (the 2-thread 8a330a81 was reused after the one-thread fix)."""
    from benchmark.metrics import moa

    trained = []
    real_train = MoAClassifier._train.__func__

    def counting(cls, *args, **kwargs):
        trained.append(1)
        return real_train(cls, *args, **kwargs)

    monkeypatch.setattr(MoAClassifier, "_train", classmethod(counting))
    cfg = MoAConfig(backbone="resnet10t", epochs=1, batch_size=32)
    first = moa.classifier_for(tiny_data, tmp_path, "split", cfg)
    assert moa.classifier_for(tiny_data, tmp_path, "split", cfg).weights_sha256 == first.weights_sha256
    assert len(trained) == 1
    monkeypatch.setattr(moa, "CLASSIFIER_THREADS", 2)
    moa.classifier_for(tiny_data, tmp_path, "split", cfg)
    assert len(trained) == 2
