"""MoA accuracy (the paper's Table 2a): does a generated image show its compound's mechanism?

A timm backbone is trained from scratch on the task's real *training* images
(treated cells labelled by MoA, controls as their own class), frozen, and its
weights hashed. It then classifies each method's generated images (label: the
MoA of the requested perturbation) and the real held-out reference images
(the ceiling). The classifier is trained once per task split and config and
cached; every accuracy row carries its weights hash, n and a seeded bootstrap
interval.
"""

from __future__ import annotations

import io as _io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from benchmark import io
from benchmark.errors import BenchmarkError
from benchmark.method import to_tensor
from benchmark.rows import RowView

from .stats import bootstrap_ci


CLASSIFIER_THREADS = 1


@dataclass(frozen=True)
class MoAConfig:
    backbone: str = "resnet18"
    epochs: int = 6
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0


class MoAClassifier:
    def __init__(self, classes: list[str], model: torch.nn.Module, config: MoAConfig, channels: int) -> None:
        self.classes, self.model, self.config, self.channels = classes, model.eval(), config, channels

    @staticmethod
    def _build(config: MoAConfig, channels: int, n_classes: int) -> torch.nn.Module:
        import timm

        return timm.create_model(config.backbone, pretrained=False, in_chans=channels, num_classes=n_classes)

    @classmethod
    def fit(cls, images: np.ndarray, labels: list[str], config: MoAConfig) -> "MoAClassifier":
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise BenchmarkError(f"MoA classifier: the training images have {len(classes)} class; expected 2 or more")
        y = torch.tensor([classes.index(l) for l in labels])
        x = TensorRows(images)  # uint8 rows (a view of the store), made tensors per batch: never the split in float
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = cls._build(config, x.shape[1], len(classes))
        threads = torch.get_num_threads()
        # the weights depend on the thread count (the order of float sums in the convolutions' backward): trained on
        # one thread, the classifier is the same on any machine of an ISA whatever its cores
        torch.set_num_threads(CLASSIFIER_THREADS)
        try:
            return cls._train(model, x, y, classes, config)
        finally:
            torch.set_num_threads(threads)

    @classmethod
    def _train(cls, model: torch.nn.Module, x: "TensorRows", y: torch.Tensor, classes: list[str],
               config: MoAConfig) -> "MoAClassifier":
        g = torch.Generator().manual_seed(config.seed)
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        steps = config.epochs * max(1, len(x) // config.batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=steps)
        model.train()
        for _ in tqdm(range(steps), desc=f"MoA classifier ({config.backbone}) on {len(x)} real training images",
                      unit="step"):
            idx = torch.randint(len(x), (config.batch_size,), generator=g)
            xb = x[idx]
            if torch.rand(1, generator=g) < 0.5:
                xb = xb.flip(-1)
            if torch.rand(1, generator=g) < 0.5:
                xb = xb.flip(-2)
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        return cls(classes, model.requires_grad_(False), config, x.shape[1])

    @torch.no_grad()
    def predict(self, images: np.ndarray, batch: int = 256) -> np.ndarray:
        out = []
        for i in range(0, len(images), batch):
            out.append(self.model(to_tensor(images[i: i + batch])).argmax(1).numpy())
        idx = np.concatenate(out) if out else np.array([], dtype=int)
        return np.asarray(self.classes, dtype=object)[idx]

    def state_bytes(self) -> bytes:
        buf = _io.BytesIO()
        torch.save({"model": self.model.state_dict(), "classes": self.classes, "config": asdict(self.config),
                    "channels": self.channels}, buf)
        return buf.getvalue()

    @property
    def weights_sha256(self) -> str:
        return io.sha256_bytes(self.state_bytes())

    def save(self, path: Path) -> None:
        io.write_bytes(path, self.state_bytes())

    @classmethod
    def load(cls, path: Path) -> "MoAClassifier":
        state = torch.load(path, map_location="cpu", weights_only=True)
        config = MoAConfig(**state["config"])
        model = cls._build(config, int(state["channels"]), len(state["classes"]))
        model.load_state_dict(state["model"])
        return cls(list(state["classes"]), model.requires_grad_(False), config, int(state["channels"]))


class TensorRows:
    """Images (an array or a `RowView`) indexed as float tensors (N, C, H, W) in [-1, 1], a batch at a time."""

    def __init__(self, images) -> None:
        self.images = images
        n, h, w, c = images.shape
        self.shape = (n, c, h, w)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        return to_tensor(np.asarray(self.images[index.numpy()]))


def moa_label(obs: pd.DataFrame, control: str) -> np.ndarray:
    """The class of each image: its MoA (`ANNOT`) if treated, the control's name otherwise."""
    return np.where(obs["STATE"].to_numpy() == "control", control, obs["ANNOT"].astype(str).to_numpy())


def recipe() -> dict[str, str | int]:
    """What decides a classifier's weights besides its data and config: the training code itself, the thread count
    it trains on, and the libraries that run it. A cached classifier is reused only if all of these match."""
    import inspect

    import timm

    code = "".join(inspect.getsource(f) for f in (MoAClassifier.fit, MoAClassifier._train, MoAClassifier._build))
    return {"code_sha256": io.sha256_bytes(code.encode())[:16], "threads": CLASSIFIER_THREADS,
            "torch": torch.__version__, "timm": timm.__version__}


def classifier_for(data, cache_dir: Path, split_hash: str, config: MoAConfig = MoAConfig()) -> MoAClassifier:
    """Train (once, then cached) the task's classifier on its real training images."""
    key = io.sha256_bytes(json.dumps({"task": data.task.name, "version": data.task.version, "split": split_hash,
                                      "config": asdict(config), "recipe": recipe()}, sort_keys=True).encode())[:20]
    path = Path(cache_dir) / "moa" / f"{key}.pt"
    if path.is_file():
        return MoAClassifier.load(path)
    rows = data.train_rows()
    clf = MoAClassifier.fit(RowView(data.images, rows), list(moa_label(data.obs.iloc[rows], data.control)), config)
    clf.save(path)
    return clf


def moa_rows(clf: MoAClassifier, data, plan, generated: np.ndarray, seed: int) -> list[dict]:
    """Accuracy on generated images and on the real reference (ceiling), overall and per MoA, with CIs."""
    annot = data.annotations()
    target = annot.loc[plan.requests["CPD_NAME"]].to_numpy()
    real_target = moa_label(plan.reference, data.control)
    gen_ok = clf.predict(generated) == target
    real_ok = clf.predict(RowView(data.images, plan.reference["row"].to_numpy())) == real_target
    space, sha = f"moa-{clf.config.backbone}", clf.weights_sha256
    rows = []

    def row(metric: str, pert: str, ok: np.ndarray, n_real: int) -> dict:
        lo, hi = bootstrap_ci(ok, seed)
        return dict(metric=metric, feature_space=space, perturbation=pert, value=float(ok.mean()),
                    std=float(ok.std(ddof=1) / np.sqrt(len(ok))) if len(ok) > 1 else float("nan"),
                    n_gen=len(ok), n_real=n_real, channel_rule="all", extractor_sha256=sha, metric_seed=seed,
                    ci_low=lo, ci_high=hi)

    rows.append(row("moa_acc", "", gen_ok, len(real_ok)))
    rows.append(row("moa_acc_real", "", real_ok, len(real_ok)))
    for moa in sorted(set(target)):
        g, r = target == moa, real_target == moa
        rows.append(row("moa_acc_by_moa", moa, gen_ok[g], int(r.sum())))
        rows.append(row("moa_acc_real_by_moa", moa, real_ok[r], int(r.sum())))
    return rows


class MoAScorer:
    """The `moa` scorer: MoA accuracy of the task's classifier on generated and real reference images."""

    name = "moa"
    doc = "MoA accuracy of a classifier trained on the task's real images; tasks with MoA labels"

    def applies(self, task) -> bool:
        return task.moa

    def score(self, data, plan, generated: np.ndarray, *, cache_dir: Path, split_hash: str,
              seed: int) -> tuple[pd.DataFrame, dict]:
        """Metric rows and the classifier's provenance for the manifest."""
        clf = classifier_for(data, cache_dir, split_hash)
        provenance = {"weights_sha256": clf.weights_sha256, "classes": clf.classes, "config": asdict(clf.config),
                      "trained_on": f"{len(data.train_rows())} real training images of {data.task.name}"}
        return pd.DataFrame(moa_rows(clf, data, plan, generated, seed)), provenance
