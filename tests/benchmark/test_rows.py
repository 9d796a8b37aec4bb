"""Row views of the store: they index like the copy they replace, and a run's training data stays a view."""

import tracemalloc

import numpy as np
import pytest
import torch

from benchmark.rows import RowView, gather


@pytest.fixture
def store(tmp_path):
    array = np.random.default_rng(0).integers(0, 255, (50, 4, 4, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", array)
    return np.load(tmp_path / "images.npy", mmap_mode="r")


ROWS = np.array([7, 3, 3, 40, 12, 0, 49, 21])


@pytest.mark.parametrize("key", [2, -1, slice(1, 6), slice(None, None, -2), np.array([4, 0, 4, 7]),
                                 np.array([True, False] * 4), torch.tensor([5, 1]), (np.array([1, 2]), 0, slice(1, 3))])
def test_a_view_indexes_like_the_copy(store, key):
    copy = np.asarray(store)[ROWS]
    view = RowView(store, ROWS)
    plain = (key.numpy() if isinstance(key, torch.Tensor) else key)
    assert np.array_equal(view[key], copy[plain])
    assert view.shape == copy.shape and len(view) == len(copy) and view.dtype == copy.dtype


def test_a_view_of_a_view_reads_the_store_and_asarray_copies(store):
    inner = RowView(store, ROWS)
    outer = RowView(inner, [6, 1, 1])
    assert outer.array is store and np.array_equal(outer.rows, ROWS[[6, 1, 1]])
    assert np.array_equal(np.asarray(outer), np.asarray(store)[ROWS[[6, 1, 1]]])
    assert np.array_equal(gather(store, ROWS, chunk=3), np.asarray(store)[ROWS])  # chunked, sorted reads


def test_the_training_data_of_a_run_is_a_view_of_the_store_not_a_copy(tiny_data, tmp_path):
    """The old `images[rows]` copied the whole training split (per process); the view allocates next to nothing
    beyond the metadata. Crops of 128 px make the split (6 MB) outweigh the metadata (under 1 MB)."""
    import dataclasses

    big = np.lib.format.open_memmap(tmp_path / "images.npy", mode="w+", dtype=np.uint8,
                                    shape=(len(tiny_data.obs), 128, 128, 3))
    big[:] = 7
    big.flush()
    data = dataclasses.replace(tiny_data, images=np.load(tmp_path / "images.npy", mmap_mode="r"))
    rows = data.train_rows()
    split_bytes = len(rows) * 128 * 128 * 3
    tracemalloc.start()
    try:
        train = data.train_data()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(train.images, RowView) and isinstance(train.images.array, np.memmap)
    assert peak < split_bytes / 4, (peak, split_bytes)
    assert np.array_equal(tiny_data.train_data().images[[0, 5, 2]], tiny_data.images[rows[[0, 5, 2]]])


def test_a_method_reads_its_batches_from_the_view(tiny_data):
    from methods.training import TrainingSet

    train = tiny_data.train_data()
    images = TrainingSet(train).images
    pick = torch.tensor([3, 0, 3])
    want = torch.from_numpy(np.asarray(tiny_data.images[train.images.rows[[3, 0, 3]]])).permute(0, 3, 1, 2)
    assert torch.equal(images[pick], want) and images.shape == (len(train.images), *want.shape[1:])


def test_features_read_in_chunks_are_those_of_one_pass(tiny_data, monkeypatch):
    """Chunks split the extractor's batches where one pass does: the same features, bit for bit."""
    from benchmark.metrics import evaluate
    from benchmark.metrics.features import ExtractorContext
    from benchmark.registry import FEATURES

    ext = FEATURES.get("tiny")(ExtractorContext(cache_dir=None, channels=tiny_data.task.channels))
    rows = tiny_data.rows("test")
    whole = ext(np.asarray(tiny_data.images[rows]))
    monkeypatch.setattr(evaluate, "CHUNK", 32)
    chunked = evaluate.view_features(ext, "rgb", RowView(tiny_data.images, rows), "test images")
    assert len(rows) > 64 and np.array_equal(chunked["rgb"], whole)
