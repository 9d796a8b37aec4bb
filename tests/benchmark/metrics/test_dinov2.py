"""The `dinov2` feature space, through the same loading path as the published weights, on a small random ViT
written in DINOv2's layout (the real weights cannot be downloaded here)."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from benchmark import io
from benchmark.cli import main
from benchmark.errors import BenchmarkError
from benchmark.metrics.features import DINOV2_WEIGHTS_ENV, ExtractorContext, dinov2


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A 2-block ViT of width 64 (one head of 64, as DINOv2's sizes) on a 4 x 4 grid of 14 px patches, saved as
    DINOv2 saves its backbones: timm's names, LayerScale `gamma`s, a `mask_token`."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(img_size=56, patch_size=14, embed_dim=64, depth=2, num_heads=1, init_values=1.0,
                            num_classes=0)
    with torch.no_grad():
        for p in vit.parameters():
            p.copy_(torch.randn(p.shape) * 0.2)
    state = {**vit.state_dict(), "mask_token": torch.zeros(1, 64)}
    path = tmp_path_factory.mktemp("dinov2") / "dinov2_vits_tiny_pretrain.pth"
    torch.save(state, path)
    return path, vit.eval()


def _official_forward(vit, x: torch.Tensor) -> torch.Tensor:
    """DINOv2's own forward at 224 px, assembled from the small ViT's pieces: patches, the class token, positions
    interpolated per forward as `dinov2/models/vision_transformer.py:180-212` does (bicubic, scale (16 + 0.1) / 4,
    no antialiasing), the blocks, the final norm, the class token."""
    proj = vit.patch_embed.proj
    tokens = F.conv2d(x, proj.weight, proj.bias, stride=14).flatten(2).transpose(1, 2)
    tokens = torch.cat([vit.cls_token.expand(len(x), -1, -1), tokens], dim=1)
    pos = vit.pos_embed
    grid = F.interpolate(pos[:, 1:].reshape(1, 4, 4, 64).permute(0, 3, 1, 2), mode="bicubic", antialias=False,
                         scale_factor=(16.1 / 4, 16.1 / 4))
    tokens = tokens + torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, 256, 64)], dim=1)
    for block in vit.blocks:
        tokens = block(tokens)
    return vit.norm(tokens)[:, 0]


def test_features_are_the_class_token_of_the_official_forward_at_224_px(weights, tmp_path):
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    path, vit = weights
    ext = dinov2(ExtractorContext(cache_dir=tmp_path, channels=("a", "b", "c"), dinov2_weights=path))
    images = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    feats = ext(images)
    assert feats.shape == (3, 64) and ext.weights_sha256 == io.sha256_file(path) and ext.rgb
    x = interpolate_bilinear_2d_like_tensorflow1x(torch.from_numpy(images).permute(0, 3, 1, 2).float(),
                                                  size=(224, 224), align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255
    with torch.no_grad():
        want = _official_forward(vit, (x - mean) / std).double().numpy()
    # the same float32 operations in another order: a bound from float32 rounding over a few hundred terms
    tol = 64 * np.finfo(np.float32).eps * max(1.0, float(np.abs(want).max()))
    assert np.abs(feats - want).max() <= tol


def test_missing_or_foreign_weights_fail_in_one_line_before_a_run_trains(weights, tmp_path, monkeypatch, data_dir,
                                                                         capsys):
    monkeypatch.delenv(DINOV2_WEIGHTS_ENV, raising=False)
    with pytest.raises(BenchmarkError, match=f"no weights file; download dinov2_vitl14_pretrain.pth .* set "
                                             f"{DINOV2_WEIGHTS_ENV}"):
        dinov2(ExtractorContext(cache_dir=tmp_path, channels=("a", "b", "c")))
    other = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(2)}, other)
    with pytest.raises(BenchmarkError, match="not a DINOv2 ViT state dict"):
        dinov2(ExtractorContext(cache_dir=tmp_path, channels=("a", "b", "c"), dinov2_weights=other))
    runs = tmp_path / "runs"
    assert main(["run", "--method", "identity", "--task", "synthetic-tiny", "--data-dir", str(data_dir), "--out",
                 str(runs), "--features", "dinov2"]) == 2
    assert "dinov2: no weights file" in capsys.readouterr().err and not runs.exists()
    monkeypatch.setenv(DINOV2_WEIGHTS_ENV, str(weights[0]))
    assert dinov2(ExtractorContext(cache_dir=tmp_path, channels=("a", "b", "c"))).weights_sha256 == \
        io.sha256_file(weights[0])
