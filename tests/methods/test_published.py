"""Importing published checkpoints: files written here in exactly the official layouts (CellFlux's `checkpoint.pth`
with its EMA wrapper's state, IMPA's `{step}_nets.ckpt` and `{step}_embeddings.ckpt`), read into our networks."""

from __future__ import annotations

import dataclasses
import re
import types

import numpy as np
import pytest
import torch

from benchmark.errors import BenchmarkError
from benchmark.method import config_from_overrides
from methods.cellflow import CellFlow, CellFlowConfig
from methods.impa import IMPA, IMPAConfig
from methods.published import official_rows, pair_tensors, read_checkpoint

from ..conftest import TINY_ADM, write_cellflux_checkpoint

# the official architecture at the tiny screen's size (the shapes, not the published widths, are what is mapped)
TINY_IMPA = ["dim_in=8", "max_conv_dim=16", "style_dim=8", "z_dim=4"]


def test_tensors_pair_by_name_then_in_registration_order_with_every_shape_checked():
    ours = {"a.w": (2, 3), "b.w": (4,), "c.w": (5, 1, 1, 1)}
    theirs = {"x.w": (4,), "a.v": (2, 3), "y.w": (5, 1)}
    assert pair_tensors(ours, theirs, aliases=((r"^a\.w$", "a.v"),)) == [("a.w", "a.v"), ("b.w", "x.w"), ("c.w", "y.w")]
    with pytest.raises(BenchmarkError, match=r"tensor x\.w has shape \(4,\), our b\.w has \(3,\)"):
        pair_tensors({**ours, "b.w": (3,)}, theirs, aliases=((r"^a\.w$", "a.v"),))
    with pytest.raises(BenchmarkError, match="3 tensors against our network's 2"):
        pair_tensors({"a.w": (2, 3), "b.w": (4,)}, theirs)


def test_a_checkpoint_is_read_without_running_code_from_it(tmp_path):
    ok = tmp_path / "ok.pth"
    torch.save({"args": types.SimpleNamespace(lr=1e-4), "model": {"w": torch.ones(2)}}, ok)
    assert read_checkpoint(ok, "x")["args"].lr == 1e-4
    bad = tmp_path / "bad.pth"
    torch.save({"model": {"w": torch.ones(2)}, "hook": re.compile("x")}, bad)  # an arbitrary class: refused
    with pytest.raises(BenchmarkError, match=r"bad\.pth: not a readable a CellFlux file \(UnpicklingError"):
        read_checkpoint(bad, "a CellFlux file")
    with pytest.raises(BenchmarkError, match="no such file.*nothing is downloaded"):
        read_checkpoint(tmp_path / "missing.pth", "x")


def test_rows_of_a_published_table_are_found_by_name():
    table = np.arange(6.0).reshape(3, 2)
    assert official_rows(table, ["a", "b", "c"], ["c", "a"], "t").tolist() == [[4, 5], [0, 1]]
    with pytest.raises(BenchmarkError, match="perturbation 'd' of the task has no row"):
        official_rows(table, ["a", "b", "c"], ["d"], "t")
    with pytest.raises(BenchmarkError, match="names a perturbation twice"):
        official_rows(table, ["a", "a", "c"], ["a"], "t")


def test_a_cellflux_checkpoint_gives_its_ema_or_raw_weights(tmp_path, train_data, make_request):
    path = tmp_path / "checkpoint.pth"
    raw, shadow = write_cellflux_checkpoint(path, train_data)
    out = {}
    for weights in ("ema", "raw"):
        m = CellFlow(config_from_overrides(CellFlowConfig, CellFlow.profiles["official"], TINY_ADM + ["nfe=2",
                                                                                                     "solver=euler"]))
        rec = m.import_published(path, train_data, weights)["imported"]
        assert rec["weights"] == weights and rec["epoch"] == 3 and rec["ema_updates"] == 5
        assert rec["args"] == {"epochs": 200, "lr": 1e-4, "output_dir": "/x"}
        want = list(shadow.values()) if weights == "ema" else [raw[k] for k in list(raw)[: len(shadow)]]
        for net in (m.model, m.ema):  # generation reads the chosen weights, whichever net it uses
            assert all(torch.equal(p, w) for p, w in zip(net.parameters(), want))
        out[weights] = m.generate(make_request(train_data.perturbations[:2]), seed=0)
    assert not torch.allclose(out["ema"], out["raw"])


def test_a_cellflux_checkpoint_without_ema_or_of_another_network_is_refused(tmp_path, train_data):
    path = tmp_path / "checkpoint.pth"
    write_cellflux_checkpoint(path, train_data, ema=False)
    make = lambda extra: CellFlow(config_from_overrides(CellFlowConfig, CellFlow.profiles["official"],  # noqa: E731
                                                        TINY_ADM + extra))
    with pytest.raises(BenchmarkError, match="saved without EMA.*--checkpoint-weights raw"):
        make([]).import_published(path, train_data, "ema")
    make([]).import_published(path, train_data, "raw")
    wider = r"checkpoint.pth \(model\): tensor official_0 has shape \(128, 1024\), our cond.weight has \(256, 1024\)"
    with pytest.raises(BenchmarkError, match=wider):
        make(["width=64"]).import_published(path, train_data, "raw")
    with pytest.raises(BenchmarkError, match="arch adm"):
        CellFlow(CellFlowConfig()).import_published(path, train_data, "raw")


def _impa_checkpoint(folder, train_data, embeddings: np.ndarray):
    """IMPA's CheckpointIO layout (IMPA/checkpoint.py:31-50, solver.py:321-334): `{step:06d}_nets.ckpt` holds each
    network's state by its official name (ours renamed as `IMPA.OFFICIAL` and the aliases say), and
    `{step:06d}_embeddings.ckpt` the frozen table, rows in the sorted order of the training perturbations."""
    m = IMPA(config_from_overrides(IMPAConfig, IMPA.profiles["official"], TINY_IMPA))
    m.networks(3, train_data.images.shape[1], train_data.embeddings.shape[1], len(train_data.perturbations))
    g = torch.Generator().manual_seed(1)
    nets = {}
    for ours, theirs in IMPA.OFFICIAL.items():
        state = {}
        for k, v in m.nets[ours].state_dict().items():
            k = re.sub(r"^trunk\.body\.", IMPA.TRUNK[ours], re.sub(r"\.skip\.", ".conv1x1.", k))
            state[k] = torch.randn(v.shape, generator=g) * 0.05
        nets[theirs] = state
    torch.save(nets, folder / "000050_nets.ckpt")
    order = np.argsort(train_data.perturbations)
    torch.save({"embedding_matrix": {"weight": torch.from_numpy(embeddings[order])}}, folder / "000050_embeddings.ckpt")
    return nets


def test_impa_checkpoints_load_every_network_and_their_table_must_be_the_tasks(tmp_path, train_data, make_request):
    # the task lists its perturbations in another order than the official loader's sorted one
    data = dataclasses.replace(train_data, perturbations=train_data.perturbations[::-1],
                               embeddings=train_data.embeddings[::-1].copy())
    nets = _impa_checkpoint(tmp_path, data, data.embeddings)
    m = IMPA(config_from_overrides(IMPAConfig, IMPA.profiles["official"], TINY_IMPA))
    rec = m.import_published(tmp_path / "000050_nets.ckpt", data)["imported"]
    assert rec["embedding_rows_checked"] == len(data.perturbations) and len(rec["files"]) == 2
    for ours, theirs in IMPA.OFFICIAL.items():
        assert sorted(t.sum().item() for t in m.nets[ours].state_dict().values()) == pytest.approx(
            sorted(t.sum().item() for t in nets[theirs].values()))
    a = m.generate(make_request(data.perturbations[:2]), seed=0)
    b = m.generate(make_request(data.perturbations[1::-1]), seed=0)  # the same controls, the targets swapped
    assert not torch.allclose(a, b)  # the condition is read
    fresh = lambda: IMPA(config_from_overrides(IMPAConfig, IMPA.profiles["official"], TINY_IMPA))  # noqa: E731
    # the table in the task's order rather than the official (sorted) one: another mapping, refused
    torch.save({"embedding_matrix": {"weight": torch.from_numpy(data.embeddings)}}, tmp_path / "000050_embeddings.ckpt")
    with pytest.raises(BenchmarkError, match="differs from the task's embedding"):
        fresh().import_published(tmp_path / "000050_nets.ckpt", data)
    other = tmp_path / "other"
    other.mkdir()
    _impa_checkpoint(other, data, data.embeddings + 1.0)  # trained on another embedding file
    with pytest.raises(BenchmarkError, match="differs from the task's embedding"):
        fresh().import_published(other / "000050_nets.ckpt", data)
    (other / "000050_embeddings.ckpt").unlink()
    with pytest.raises(BenchmarkError, match="000050_embeddings.ckpt: no such file"):
        fresh().import_published(other / "000050_nets.ckpt", data)


TINY_PHENDIFF = ["widths=8,16", "layers_per_block=1", "norm_num_groups=8", "attention_head_dim=8", "resize=0",
                 "inversion_steps=2", "generation_steps=2"]


def _phendiff_folder(folder, train_data, **scheduler):
    """What PhenDiff's `save_pretrained` writes (src/utils_training.py:1004-1058): a diffusers pipeline folder whose
    U-Net has a class table (`num_class_embeds`), classes indexed as ImageFolder sorts their folders."""
    from diffusers import DDIMPipeline, DDIMScheduler, UNet2DModel

    torch.manual_seed(2)
    unet = UNet2DModel(sample_size=train_data.images.shape[1], in_channels=3, out_channels=3,
                       block_out_channels=(8, 16), layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8, norm_num_groups=8,
                       flip_sin_to_cos=True, freq_shift=0, num_class_embeds=len(train_data.perturbations) + 1).eval()
    with torch.no_grad():
        for p in unet.parameters():
            p.copy_(torch.randn(p.shape) * 0.05)
    sched = DDIMScheduler(**{"num_train_timesteps": 3000, "beta_schedule": "scaled_linear", "beta_start": 1e-4,
                             "beta_end": 0.02, "prediction_type": "v_prediction", "rescale_betas_zero_snr": True,
                             "timestep_spacing": "trailing", "clip_sample": True, **scheduler})
    DDIMPipeline(unet=unet, scheduler=sched).save_pretrained(folder)
    return unet


def test_a_phendiff_pipeline_folder_gives_the_outputs_of_its_unet_with_classes_found_by_name(tmp_path, train_data):
    from methods.phendiff import PhenDiff, PhenDiffConfig
    from methods.phendiff.model import CONTROL, NULL, PERTURBATION

    unet = _phendiff_folder(tmp_path / "pipe", train_data)
    m = PhenDiff(config_from_overrides(PhenDiffConfig, PhenDiff.profiles["official"], TINY_PHENDIFF))
    rec = m.import_published(tmp_path / "pipe", train_data)["imported"]
    classes = sorted([*train_data.perturbations, train_data.control])
    assert rec["classes"] == classes and m.config.class_table == len(train_data.perturbations)
    g = torch.Generator().manual_seed(3)
    size = train_data.images.shape[1]
    x, t = torch.randn(3, 3, size, size, generator=g), torch.tensor([5, 1500, 2999])
    pert = train_data.perturbations[-1]
    emb = torch.from_numpy(train_data.embeddings[[-1, -1, -1]])
    kind = torch.tensor([PERTURBATION, CONTROL, NULL])
    with torch.no_grad():
        ours = m._net()(x, t, emb, kind)
        labels = torch.tensor([classes.index(pert), classes.index(train_data.control)])
        want = torch.cat([unet(x[:2], t[:2], class_labels=labels).sample, _no_class(unet, x[2:], t[2:])])
    tol = 8 * torch.finfo(torch.float32).eps * want.abs().max()  # one forward, float32: summation order only
    assert (ours - want).abs().max() <= tol
    saved = tmp_path / "saved"
    m.save(saved)  # the imported table travels with the stored model
    again = PhenDiff.from_dir(saved)
    with torch.no_grad():
        assert torch.equal(again._net()(x, t, emb, kind), ours)


def _no_class(unet, x, t):
    """The published null condition: the U-Net without any class embedding added (a zero row)."""
    with torch.no_grad():
        table = unet.class_embedding.weight.clone()
        unet.class_embedding.weight.zero_()
        out = unet(x, t, class_labels=torch.zeros(len(x), dtype=torch.long)).sample
        unet.class_embedding.weight.copy_(table)
    return out


def test_a_phendiff_folder_of_another_sampler_or_class_set_is_refused(tmp_path, train_data):
    from methods.phendiff import PhenDiff, PhenDiffConfig

    fresh = lambda: PhenDiff(config_from_overrides(PhenDiffConfig, PhenDiff.profiles["official"],  # noqa: E731
                                                   TINY_PHENDIFF))
    _phendiff_folder(tmp_path / "eps", train_data, prediction_type="epsilon")
    with pytest.raises(BenchmarkError, match="prediction_type is 'epsilon', our sampler uses 'v_prediction'"):
        fresh().import_published(tmp_path / "eps", train_data)
    fewer = dataclasses.replace(train_data, perturbations=train_data.perturbations[:-1],
                                embeddings=train_data.embeddings[:-1])
    _phendiff_folder(tmp_path / "fewer", fewer)  # trained on one class fewer than the task has
    with pytest.raises(BenchmarkError, match=f"{len(fewer.perturbations) + 1} rows, but the official order has "
                                             f"{len(train_data.perturbations) + 1}"):
        fresh().import_published(tmp_path / "fewer", train_data)
    (tmp_path / "fewer" / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(BenchmarkError, match="no diffusion_pytorch_model.safetensors or .bin"):
        fresh().import_published(tmp_path / "fewer", train_data)
