import warnings

import numpy as np
import pytest
import torch
import torch_fidelity

from benchmark.errors import BenchmarkError
from benchmark.metrics.channels import rxrx1_rgb
from benchmark.metrics.distances import fid, kid
from benchmark.metrics.features import ExtractorContext, Morphology
from benchmark.registry import CHANNEL_RULES, FEATURES


class UInt8Dataset(torch.utils.data.Dataset):
    def __init__(self, images):  # (N, H, W, 3) uint8
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return torch.from_numpy(self.images[i]).permute(2, 0, 1).contiguous()


def images(seed, n, size=32, shift=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 200, (n, size, size, 3)) + shift
    return np.clip(base, 0, 255).astype(np.uint8)


def ours_vs_fidelity(extractor_name, ctx, a, b, **fidelity_kwargs):
    ext = FEATURES.get(extractor_name)(ctx)
    fa, fb = ext(a), ext(b)
    ours_fid = fid(fb, fa)
    ours_kid = kid(fb, fa, seed=7)[0]
    theirs = torch_fidelity.calculate_metrics(input1=UInt8Dataset(b), input2=UInt8Dataset(a), fid=True, kid=True,
                                              kid_subset_size=min(len(a), len(b)), rng_seed=7, verbose=False, cuda=False,
                                              cache=False, **fidelity_kwargs)
    return ours_fid, ours_kid, theirs


def test_pipeline_equals_torch_fidelity_on_tiny_registered_extractor(tmp_path):
    ctx = ExtractorContext(cache_dir=tmp_path, channels=("a", "b", "c"))
    a, b = images(0, 40), images(1, 40, shift=30)
    f, k, theirs = ours_vs_fidelity("tiny", ctx, a, b, feature_extractor="tiny-test", feature_layer_fid="16",
                                    feature_layer_kid="16")
    assert f == pytest.approx(theirs["frechet_inception_distance"], rel=1e-5)
    assert k == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-5, abs=1e-9)


@pytest.mark.slow
def test_converted_inception_matches_fid_helper_and_torch_fidelity(tmp_path):
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    from benchmark.metrics.inception_weights import fid_helper_torchscript, resolve

    path, digest = resolve(None, tmp_path)
    assert len(digest) == 64
    ctx = ExtractorContext(cache_dir=tmp_path.parent / (tmp_path.name + "-c"), channels=("a", "b", "c"))
    ctx.cache_dir.mkdir()
    (ctx.cache_dir / "weights").mkdir()
    ext = FEATURES.get("inception")(ExtractorContext(cache_dir=tmp_path.parent, channels=("a", "b", "c"),
                                                          inception_weights=path))
    x = images(3, 6, size=48)
    ours = ext(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.load(str(fid_helper_torchscript()), map_location="cpu").eval()
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float()
    t = (interpolate_bilinear_2d_like_tensorflow1x(t, size=(299, 299), align_corners=False) - 128) / 128
    with torch.no_grad():
        ref = scripted(t).double().numpy()
    assert ours.shape == (6, 2048)
    assert np.abs(ours - ref).max() < 1e-5
    # and our FID/KID on those weights equal torch-fidelity's own end-to-end computation
    a, b = images(4, 12, size=40), images(5, 12, size=40, shift=40)
    f, k, theirs = ours_vs_fidelity("inception", ExtractorContext(cache_dir=tmp_path.parent, channels=("a", "b", "c"),
                                                                   inception_weights=path), a, b,
                                    feature_extractor="inception-v3-compat", feature_extractor_weights_path=str(path))
    assert f == pytest.approx(theirs["frechet_inception_distance"], rel=1e-4)
    assert k == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-4)


def test_missing_weights_file_is_a_clear_error(tmp_path):
    ctx = ExtractorContext(cache_dir=tmp_path, channels=("a", "b", "c"), inception_weights=tmp_path / "nope.pth")
    with pytest.raises(BenchmarkError, match="nope.pth: Inception weights file not found"):
        FEATURES.get("inception")(ctx)


def test_weights_that_are_not_a_plain_state_dict_are_refused(tmp_path):
    import pickle

    bad = tmp_path / "evil.pth"
    bad.write_bytes(pickle.dumps(object()))
    ctx = ExtractorContext(cache_dir=tmp_path, channels=("a", "b", "c"), inception_weights=bad)
    with pytest.raises(BenchmarkError, match="not a plain state dict"):
        FEATURES.get("inception")(ctx)


def test_unknown_feature_space(tmp_path):
    with pytest.raises(BenchmarkError, match="unknown feature space 'nope'"):
        FEATURES.get("nope")(ExtractorContext(cache_dir=tmp_path, channels=("a",)))


def disk(size, radius, channels=3, dna=2):
    yy, xx = np.mgrid[:size, :size]
    img = np.zeros((size, size, channels), np.uint8)
    img[..., dna][(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < radius**2] = 200
    img[..., 0] = 20
    return img


def test_morphology_measures_nucleus_size_and_count():
    m = Morphology(("F-actin", "beta-tubulin", "DNA"))
    assert m.dna == 2
    small, big = m(np.stack([disk(48, 5)])), m(np.stack([disk(48, 10)]))
    area = m.feature_names.index("nuc:area")
    count = m.feature_names.index("nuc:count")
    assert big[0, area] / small[0, area] == pytest.approx(4.0, rel=0.15)
    two = disk(48, 5)
    two[5:10, 5:10, 2] = 200
    assert m(np.stack([two]))[0, count] == 2
    again = m(np.stack([disk(48, 5)]))
    assert np.array_equal(again, small)  # deterministic


def test_channel_rules():
    x = np.random.default_rng(0).integers(0, 255, (4, 8, 8, 5)).astype(np.uint8)
    views = CHANNEL_RULES.get("each").views(x)
    assert [v for v, _ in views] == [f"ch{i}" for i in range(5)]
    assert all(im.shape == (4, 8, 8, 3) for _, im in views)
    assert np.array_equal(views[4][1][..., 1], x[..., 4])
    assert CHANNEL_RULES.get("first3").views(x)[0][1].shape[-1] == 3
    with pytest.raises(BenchmarkError, match="'rgb' needs 3 channels, images have 5"):
        CHANNEL_RULES.get("rgb").views(x)
    six = np.zeros((1, 2, 2, 6), np.uint8)
    six[..., 0] = 200  # stain 1 -> blue at weight 1, less the offset of half the range: 200 - 127.5
    assert CHANNEL_RULES.get("rgbmix").views(six)[0][1][0, 0, 0].tolist() == [0, 0, 72]
    assert CHANNEL_RULES.get("rgbmix").views(np.full((1, 1, 1, 6), 255, np.uint8))[0][1].ravel().tolist() == [255] * 3


def test_the_rxrx1_rule_is_cellflux_colour_mix_in_its_own_value_range():
    """CellFlux mixes in [-1, 1]: v = 2u - 1, RGB = clamp(W^T v, -1, 1), shown as (RGB + 1) / 2."""
    w = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]])
    u = np.random.default_rng(1).random((50, 6))
    official = (np.clip((2 * u - 1) @ w, -1, 1) + 1) / 2
    assert np.allclose(rxrx1_rgb(u), official, atol=1e-6)
    assert np.allclose(rxrx1_rgb(np.full(6, 0.5)), 0.5) and np.allclose(rxrx1_rgb(np.ones(6)), 1.0)
    assert np.allclose(rxrx1_rgb(np.zeros(6)), 0.0)
