"""The simulated screen: a cell-painting-like perturbation screen with known counterfactuals.

Why simulate: a real screen never shows the same cell with and without a
perturbation. Here every cell is a latent state (nucleus and cell shape,
stain intensities, texture seeds, neighbours) rendered through a plate's
batch effect (per-channel gain and offset, background ramp, blur, noise). A
perturbation acts on the latent state through an effect model per MoA, so the
*same* cell can be rendered perturbed: its counterfactual. That gives paired
metrics and lets the suite check that its metrics rank methods correctly.

The screen is written in IMPA's BBBC021 layout (one `H x W x 3` uint8 `.npy`
per crop under `WeekN/PLATE/`, a metadata CSV, `emb_fp.csv` Morgan
fingerprints), so the reader used for real data reads it. Channel order follows
BBBC021: F-actin, beta-tubulin, DNA.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage
from tqdm.auto import tqdm

from benchmark import io
from benchmark.errors import BenchmarkError

from .compounds import CONTROL, bbbc021_compounds
from .embeddings import morgan_fingerprints

SCREEN_VERSION = "2"  # 2: validation cells (SPLIT "val") with their counterfactuals
CHANNELS = ("F-actin", "beta-tubulin", "DNA")
METADATA = "metadata/synthetic_df_all.csv"
EMBEDDINGS = "embeddings/emb_fp.csv"
COUNTERFACTUALS = "counterfactuals/images.npy"
COUNTERFACTUAL_INDEX = "counterfactuals/index.csv"

# Two or three compounds per MoA so MoA and compound identity are distinct;
# the `-ood` task holds out the starred ones (the BBBC021 OOD compounds whose
# structure we ship), each with a same-MoA sibling left in training.
DEFAULT_COMPOUNDS = (
    "cytochalasin D",
    "mevinolin/lovastatin",
    "simvastatin",  # *
    "chlorambucil",
    "etoposide",
    "camptothecin",
    "floxuridine",
    "PP-2",
    "alsterpaullone",
    "demecolcine",
    "nocodazole",
    "taxol",
    "docetaxel",  # *
    "epothilone B",  # *
    "MG-132",
    "lactacystin",  # *
    "emetine",
    "cyclohexamide",  # *
)
OOD_COMPOUNDS = ("simvastatin", "docetaxel", "epothilone B", "lactacystin", "cyclohexamide")


@dataclass(frozen=True)
class Effect:
    """How a perturbation moves a cell's latent state (neutral values = no effect)."""

    nuc_scale: float = 1.0  # nucleus radius factor
    nuc_frag: float = 0.0  # expected number of nuclear fragments (micronuclei)
    nuc_int: float = 1.0  # DNA stain intensity factor
    cell_scale: float = 1.0  # cell radius factor
    rounding: float = 0.0  # 0..1: pulls cell aspect ratio towards 1
    elongation: float = 1.0  # cell aspect ratio factor
    actin_fibers: float = 0.0  # added stress-fibre strength (negative: lost)
    actin_puncta: float = 0.0  # expected number of actin aggregates
    actin_int: float = 1.0
    tub_fibers: float = 0.0  # added microtubule texture (negative: diffuse)
    tub_bundles: float = 0.0  # bright bundled ring
    tub_int: float = 1.0
    density: float = 1.0  # neighbour density factor

    MULTIPLICATIVE = ("nuc_scale", "nuc_int", "cell_scale", "elongation", "actin_int", "tub_int", "density")

    def scaled(self, s: float) -> "Effect":
        """The effect at strength `s` (0 = none, 1 = as defined)."""
        kw = {}
        for k, v in asdict(self).items():
            kw[k] = float(v) ** s if k in self.MULTIPLICATIVE else float(v) * s
        return Effect(**kw)


NEUTRAL = Effect()

# Effect per MoA, after the phenotypes described in the BBBC021 literature and
# the paper (e.g. demecolcine: smaller fragmented nuclei; floxuridine: fewer
# cells; mevinolin: cell shrinkage).
MOA_EFFECTS: dict[str, Effect] = {
    "Actin disruptors": Effect(actin_fibers=-0.9, actin_puncta=5.0, cell_scale=0.85, actin_int=1.15),
    "Cholesterol-lowering": Effect(cell_scale=0.72, rounding=0.6, actin_int=1.15),
    "DNA damage": Effect(nuc_scale=1.3, nuc_int=0.8, cell_scale=1.15, density=0.75),
    "DNA replication": Effect(density=0.25, nuc_scale=1.15, nuc_int=1.1),
    "Epithelial": Effect(density=1.9, rounding=0.4, cell_scale=0.9),
    "Kinase inhibitors": Effect(elongation=1.6, actin_fibers=0.6),
    "Microtubule destabilizers": Effect(nuc_scale=0.65, nuc_frag=4.0, tub_fibers=-0.9, rounding=0.7, tub_int=0.85),
    "Microtubule stabilizers": Effect(tub_bundles=1.0, tub_int=1.35, nuc_frag=1.5, cell_scale=1.15),
    "Protein degradation": Effect(tub_fibers=-0.4, actin_puncta=2.0, nuc_int=1.3, cell_scale=1.1, actin_int=0.8),
    "Protein synthesis": Effect(cell_scale=0.8, actin_int=0.6, tub_int=0.6, nuc_scale=0.9),
}


@dataclass(frozen=True)
class ScreenConfig:
    """Size and seed of a simulated screen; counts are per batch (plate)."""

    seed: int = 0
    image_size: int = 48
    n_batches: int = 3
    compounds: tuple[str, ...] = DEFAULT_COMPOUNDS
    train_per_compound: int = 24
    test_per_compound: int = 12
    train_controls: int = 96
    test_controls: int = 16
    # validation cells (model selection, learning curves): new cells after the train and test ones, which stay as
    # they were; their controls' counterfactuals are rendered too, so the paired error is known on validation
    val_per_compound: int = 4
    val_controls: int = 8

    @classmethod
    def preset(cls, name: str, seed: int = 0) -> "ScreenConfig":
        presets = {
            "default": cls(seed=seed),
            "tiny": cls(seed=seed, image_size=32, n_batches=2, compounds=DEFAULT_COMPOUNDS[:6] + ("docetaxel", "taxol"),
                        train_per_compound=6, test_per_compound=4, train_controls=16, test_controls=6,
                        val_per_compound=2, val_controls=3),
            # the metric calibration's screen: the default one with 144 test cells per compound and 48 test controls
            # per plate (one per request of a plate, so no counterfactual repeats)
            "calibration": cls(seed=seed, test_per_compound=48, test_controls=48),
            # the learnability check's known answer: two compounds with strong, opposite effects (taxol: bundled,
            # brighter tubulin and larger cells; emetine: dimmer actin and tubulin, smaller cells), so a model that
            # ignores the condition can at best learn their average, about no change
            "learn": cls(seed=seed, image_size=32, n_batches=2, compounds=("taxol", "emetine"), train_per_compound=48,
                         test_per_compound=16, train_controls=48, test_controls=8, val_per_compound=4, val_controls=4),
            "large": cls(seed=seed, image_size=96, n_batches=4, train_per_compound=96, test_per_compound=48,
                         train_controls=384, test_controls=64, val_per_compound=16, val_controls=32),
        }
        if name not in presets:
            raise BenchmarkError(f"unknown screen size {name!r}; expected one of {', '.join(presets)}")
        return presets[name]

    def digest(self) -> str:
        blob = json.dumps({"version": SCREEN_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _stable_unit(*parts: object) -> float:
    """A number in [0, 1) that depends only on `parts` (no Python hash seeding)."""
    h = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:8], "little") / 2**64


def compound_effect(name: str, moa: str, seed: int) -> tuple[Effect, float]:
    """A compound's effect: its MoA's, with a compound-specific twist and strength."""
    if name == CONTROL:
        return NEUTRAL, 0.0
    base = MOA_EFFECTS[moa]
    rng = np.random.default_rng(int(_stable_unit("compound", name, seed) * 2**32))
    twisted = {}
    for k, v in asdict(base).items():
        if k in Effect.MULTIPLICATIVE:
            twisted[k] = float(v) ** float(1.0 + 0.25 * rng.standard_normal())
        else:
            twisted[k] = float(v) * float(1.0 + 0.25 * rng.standard_normal())
    strength = 0.8 + 0.4 * _stable_unit("strength", name, seed)
    return Effect(**twisted), strength


@dataclass(frozen=True)
class Plate:
    """A plate's technical (batch) effect: what a method must *not* learn as biology."""

    name: str
    week: str
    gain: tuple[float, float, float]
    offset: tuple[float, float, float]
    ramp: float
    ramp_angle: float
    blur: float
    noise: float
    density: float
    size_bias: float

    @classmethod
    def sample(cls, index: int, seed: int) -> "Plate":
        rng = np.random.default_rng([seed, 7919, index])
        return cls(
            name=f"SIM{index + 1:03d}",
            week=f"Week{index + 1}",
            gain=tuple(float(g) for g in rng.uniform(0.7, 1.3, 3)),
            offset=tuple(float(o) for o in rng.uniform(0.0, 0.1, 3)),
            ramp=float(rng.uniform(0.0, 0.08)),
            ramp_angle=float(rng.uniform(0, 2 * np.pi)),
            blur=float(rng.uniform(0.0, 1.0)),
            noise=float(rng.uniform(0.01, 0.03)),
            density=float(rng.uniform(0.7, 1.3)),
            size_bias=float(rng.uniform(0.92, 1.08)),
        )

    @property
    def batch(self) -> str:
        return f"{self.week}_{self.name}"


@dataclass(frozen=True)
class Cell:
    """The latent state of one cell and its neighbourhood (sizes in units of 48 px)."""

    nuc_r: float
    nuc_aspect: float
    nuc_angle: float
    nuc_int: float
    cell_r: float
    cell_aspect: float
    cell_angle: float
    cell_offset: tuple[float, float]
    shape_harmonics: tuple[float, float, float, float]
    actin_int: float
    tub_int: float
    fibre_angle: float
    response: tuple[float, float, float]
    neighbours: tuple[tuple[float, ...], ...] = field(default_factory=tuple)
    texture_seed: int = 0

    @classmethod
    def sample(cls, rng: np.random.Generator, plate: Plate) -> "Cell":
        neighbours = []
        for _ in range(6):
            angle = rng.uniform(0, 2 * np.pi)
            # presence draw, distance factor, nucleus radius, cell radius, angle, intensity
            neighbours.append((float(rng.uniform()), float(angle), float(rng.uniform(1.5, 2.3)),
                               float(rng.normal(5.0, 0.5)), float(rng.normal(12.0, 1.5)),
                               float(rng.uniform(0, np.pi)), float(rng.normal(1.0, 0.1))))
        return cls(
            nuc_r=float(np.clip(rng.normal(5.2, 0.6), 3.5, 7.5)) * plate.size_bias,
            nuc_aspect=float(rng.uniform(1.0, 1.4)),
            nuc_angle=float(rng.uniform(0, np.pi)),
            nuc_int=float(np.clip(rng.normal(0.72, 0.08), 0.4, 1.0)),
            cell_r=float(np.clip(rng.normal(13.0, 1.6), 9.0, 18.0)) * plate.size_bias,
            cell_aspect=float(rng.uniform(1.0, 1.5)),
            cell_angle=float(rng.uniform(0, np.pi)),
            cell_offset=(float(rng.normal(0, 1.2)), float(rng.normal(0, 1.2))),
            shape_harmonics=tuple(float(x) for x in rng.uniform(-1, 1, 4)),
            actin_int=float(np.clip(rng.normal(0.55, 0.07), 0.3, 0.8)),
            tub_int=float(np.clip(rng.normal(0.5, 0.07), 0.3, 0.8)),
            fibre_angle=float(rng.uniform(0, np.pi)),
            response=tuple(float(x) for x in rng.normal(0, 1, 3)),
            neighbours=tuple(neighbours),
            texture_seed=int(rng.integers(0, 2**31 - 1)),
        )


def _ellipse_distance(yy, xx, cy, cx, r, aspect, angle, harmonics=None):
    """Normalised distance to an ellipse centre (1 on the outline), optionally wobbly."""
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(angle), np.sin(angle)
    u = c * dx + s * dy
    v = -s * dx + c * dy
    a = np.sqrt(aspect)
    d = np.sqrt((u / (r * a)) ** 2 + (v * a / r) ** 2)
    if harmonics is not None:
        theta = np.arctan2(v, u)
        h1, p1, h2, p2 = harmonics
        d = d / (1 + 0.07 * h1 * np.cos(2 * theta + 3 * p1) + 0.05 * h2 * np.cos(3 * theta + 3 * p2))
    return d


def _soft(d, r, softness=0.8):
    """A soft mask that is 1 inside the outline (d < 1) and fades over ~softness px."""
    return 1.0 / (1.0 + np.exp(np.clip((d - 1.0) * r / softness, -30, 30)))


def render(cell: Cell, effect: Effect, strength: float, plate: Plate, size: int) -> np.ndarray:
    """Render one crop (H x W x 3 uint8) of `cell` under `effect` on `plate`."""
    k = size / 48.0
    rng = np.random.default_rng(cell.texture_seed)
    # The cell's own response varies around the compound's strength.
    s = strength * float(np.exp(0.2 * cell.response[0])) if strength > 0 else 0.0
    e = effect.scaled(s) if s > 0 else NEUTRAL
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    centre = (size - 1) / 2.0
    white = rng.standard_normal((4, size, size))
    fine = ndimage.gaussian_filter(white[0], 1.0 * k)
    fine /= fine.std() + 1e-8
    coarse = ndimage.gaussian_filter(white[1], 2.5 * k)
    coarse /= coarse.std() + 1e-8
    fibre_noise = ndimage.gaussian_filter(white[2], 0.7 * k)
    fibre_noise /= fibre_noise.std() + 1e-8

    actin = np.zeros((size, size))
    tub = np.zeros((size, size))
    dna = np.zeros((size, size))

    def draw_cell(cy, cx, nuc_r, nuc_aspect, nuc_angle, nuc_int, cell_r, cell_aspect, cell_angle, off, harm, a_int, t_int, main):
        nuc_r = nuc_r * e.nuc_scale * k
        cell_r = cell_r * e.cell_scale * k
        aspect = 1 + (cell_aspect * e.elongation - 1) * (1 - np.clip(e.rounding, 0, 1))
        aspect = max(aspect, 1.0)
        ccy, ccx = cy + off[0] * k, cx + off[1] * k
        d_cell = _ellipse_distance(yy, xx, ccy, ccx, cell_r, aspect, cell_angle, harm)
        m_cell = _soft(d_cell, cell_r)
        # cortical actin ring + stress fibres + aggregates
        ring = np.exp(-(((1 - d_cell) * cell_r / (2.0 * k)) ** 2))
        fibres_w = np.clip(0.35 + e.actin_fibers, 0, 2)
        direction = np.cos(cell.fibre_angle) * xx + np.sin(cell.fibre_angle) * yy
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * direction / (3.0 * k) + 2.0 * fibre_noise)
        act = a_int * e.actin_int * m_cell * (0.35 + 0.55 * ring + fibres_w * stripes * 0.5 + 0.1 * coarse)
        # microtubules: perinuclear, radial filaments, optional bundles
        r_from_nuc = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        radial = np.exp(-r_from_nuc / (0.7 * cell_r))
        angle = np.arctan2(yy - cy, xx - cx)
        filaments = 0.5 + 0.5 * np.cos(14 * angle + 3.0 * fibre_noise)
        fil_w = np.clip(0.6 + e.tub_fibers, 0, 2)
        bundles = e.tub_bundles * np.exp(-(((d_cell - 0.65) * cell_r / (1.5 * k)) ** 2))
        tb = t_int * e.tub_int * m_cell * (0.3 + 0.7 * radial * (1 - 0.5 * fil_w + fil_w * filaments) + 0.9 * bundles + 0.08 * coarse)
        # nucleus, possibly fragmented into micronuclei
        n_frag = 0
        if main and e.nuc_frag > 0:
            n_frag = int(np.clip(np.round(e.nuc_frag + 0.8 * cell.response[1]), 0, 6))
        main_r = nuc_r * (0.8 if n_frag else 1.0)
        d_nuc = _ellipse_distance(yy, xx, cy, cx, main_r, nuc_aspect, nuc_angle)
        nuc = _soft(d_nuc, main_r)
        for j in range(n_frag):
            a = nuc_angle + 2 * np.pi * j / n_frag + 0.3 * cell.response[2]
            fr = main_r * 0.45
            fy, fx = cy + np.sin(a) * main_r * 1.45, cx + np.cos(a) * main_r * 1.45
            nuc = np.maximum(nuc, _soft(_ellipse_distance(yy, xx, fy, fx, fr, 1.0, 0.0), fr))
        chromatin = 0.85 + 0.25 * fine
        return act, tb, nuc * nuc_int * e.nuc_int * chromatin

    parts = [draw_cell(centre, centre, cell.nuc_r, cell.nuc_aspect, cell.nuc_angle, cell.nuc_int, cell.cell_r,
                       cell.cell_aspect, cell.cell_angle, cell.cell_offset, cell.shape_harmonics, cell.actin_int, cell.tub_int, True)]
    p_present = 0.4 * plate.density * e.density
    for present, ang, dist, nr, cr, cang, inten in cell.neighbours:
        if present >= p_present:
            continue
        r_c = cr * e.cell_scale * k
        cy = centre + np.sin(ang) * dist * r_c
        cx = centre + np.cos(ang) * dist * r_c
        parts.append(draw_cell(cy, cx, nr, 1.2, cang, cell.nuc_int * inten, cr, 1.3, cang, (0.0, 0.0),
                               (0.0, 0.0, 0.0, 0.0), cell.actin_int * inten, cell.tub_int * inten, False))
    for act, tb, nu in parts:
        actin = np.maximum(actin, act)
        tub = np.maximum(tub, tb)
        dna = np.maximum(dna, nu)
    # actin aggregates (puncta) inside the main cell
    n_puncta = int(np.clip(np.round(e.actin_puncta * (1 + 0.3 * cell.response[2])), 0, 12))
    if n_puncta:
        pts = rng.uniform(-0.6, 0.6, (n_puncta, 2)) * cell.cell_r * e.cell_scale * k
        for py, px in pts:
            actin += 0.6 * np.exp(-((yy - centre - py) ** 2 + (xx - centre - px) ** 2) / (2 * (1.0 * k) ** 2))

    img = np.stack([actin, tub, dna], axis=-1)
    # the plate's technical effect
    if plate.blur > 0.05:
        img = ndimage.gaussian_filter(img, sigma=(plate.blur * k, plate.blur * k, 0))
    ramp = plate.ramp * ((np.cos(plate.ramp_angle) * xx + np.sin(plate.ramp_angle) * yy) / size + 0.5)
    img = img * np.asarray(plate.gain) + np.asarray(plate.offset) + ramp[..., None]
    img = img + plate.noise * white[3][..., None] * np.array([1.0, 0.9, 0.8])
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def _cell_rng(seed: int, batch: int, compound: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, batch, compound, index])


def simulate(root: Path, config: ScreenConfig) -> Path:
    """Write a screen under `root` (atomically: a temp dir renamed at the end)."""
    root = Path(root)
    if (root / "screen.json").is_file():
        return root
    table = bbbc021_compounds()
    unknown = [c for c in config.compounds if c not in table.index]
    if unknown:
        raise BenchmarkError(f"screen compound {unknown[0]!r} is not in tasks/data/bbbc021_compounds.csv")
    names = [CONTROL, *config.compounds]
    effects = {n: compound_effect(n, table.loc[n, "ANNOT"], config.seed) for n in names}
    plates = [Plate.sample(b, config.seed) for b in range(config.n_batches)]
    tmp = root.with_name(root.name + f".tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "metadata").mkdir(parents=True)
    rows, cf_images, cf_rows = [], [], []
    per_compound = config.train_per_compound + config.test_per_compound + config.val_per_compound
    controls = config.train_controls + config.test_controls + config.val_controls
    total = config.n_batches * (controls + len(config.compounds) * per_compound)
    bar = tqdm(total=total + config.n_batches * (config.test_controls + config.val_controls) * len(config.compounds),
               desc="simulating screen", unit="crop")
    size = config.image_size
    for b, plate in enumerate(plates):
        (tmp / plate.week / plate.name).mkdir(parents=True)
        for ci, name in enumerate(names):
            n_train = config.train_controls if name == CONTROL else config.train_per_compound
            n_test = config.test_controls if name == CONTROL else config.test_per_compound
            n_val = config.val_controls if name == CONTROL else config.val_per_compound
            effect, strength = effects[name]
            for i in range(n_train + n_test + n_val):
                cell = Cell.sample(_cell_rng(config.seed, b, ci, i), plate)
                crop = render(cell, effect, strength, plate, size)
                table_no, image_no, obj = ci + 1, i // 8 + 1, i % 8 + 1
                key = f"{plate.week}_{plate.name}_{table_no}_{image_no}_{obj}.0"
                np.save(tmp / plate.week / plate.name / f"{table_no}_{image_no}_{obj}.0.npy", crop)
                split = "train" if i < n_train else "test" if i < n_train + n_test else "val"
                rows.append({
                    "SAMPLE_KEY": key, "BATCH": plate.batch, "TABLE_NUMBER": table_no, "IMAGE_NUMBER": image_no,
                    "OBJECT_NUMBER": float(obj), "CPD_NAME": name, "SMILES": table.loc[name, "SMILES"],
                    "DOSE": 0.0 if name == CONTROL else 1.0, "ANNOT": table.loc[name, "ANNOT"],
                    "STATE": "control" if name == CONTROL else "trt", "PLATE": plate.name, "SPLIT": split,
                })
                bar.update()
                if name == CONTROL and split != "train":
                    # the counterfactual: this very cell, on this plate, under each compound
                    for other in config.compounds:
                        eff, st = effects[other]
                        cf_images.append(render(cell, eff, st, plate, size))
                        cf_rows.append({"SAMPLE_KEY": key, "CPD_NAME": other})
                        bar.update()
    bar.close()
    meta = pd.DataFrame(rows)
    io.write_csv(tmp / METADATA, meta, index=True)
    io.write_npy(tmp / COUNTERFACTUALS, np.stack(cf_images))
    io.write_csv(tmp / COUNTERFACTUAL_INDEX, pd.DataFrame(cf_rows))
    smiles = {n: table.loc[n, "SMILES"] for n in names}
    io.write_csv(tmp / EMBEDDINGS, morgan_fingerprints(smiles), index=True)
    io.write_json(tmp / "screen.json", {
        "version": SCREEN_VERSION, "config": asdict(config), "channels": CHANNELS,
        "plates": [asdict(p) for p in plates],
        "effects": {n: {"effect": asdict(effects[n][0]), "strength": effects[n][1]} for n in names},
    })
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(tmp, root)
    except OSError:
        # another process finished the same screen first; theirs is identical
        shutil.rmtree(tmp, ignore_errors=True)
        if not (root / "screen.json").is_file():
            raise
    return root


def cell_of(key: str) -> tuple[int, int, int]:
    """(plate index, compound index, cell index) of a SAMPLE_KEY this simulator wrote: the inverse of its key rule
    `Week{b+1}_SIM{b+1:03d}_{compound+1}_{cell // 8 + 1}_{cell % 8 + 1}.0`."""
    try:
        week, _, table, image, obj = key.split("_")
        return int(week.removeprefix("Week")) - 1, int(table) - 1, (int(image) - 1) * 8 + int(float(obj)) - 1
    except ValueError:
        raise BenchmarkError(f"SAMPLE_KEY {key!r} was not written by the screen simulator") from None


def render_scaled(root: Path, keys: list[str], compounds: list[str], scale: float) -> np.ndarray:
    """The cells of `keys` (on their own plates) rendered under `compounds` with every effect at `scale` of its
    strength: the phenotype-strength ladder of the calibration (1: the true counterfactuals, 0: the untreated
    cells), from what `screen.json` recorded."""
    meta = json.loads((Path(root) / "screen.json").read_text())
    config = ScreenConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()})
    plates = [Plate(**{k: tuple(v) if isinstance(v, list) else v for k, v in p.items()}) for p in meta["plates"]]
    effects = {n: (Effect(**e["effect"]), float(e["strength"])) for n, e in meta["effects"].items()}
    out = []
    for key, compound in zip(keys, compounds):
        b, ci, i = cell_of(key)
        cell = Cell.sample(_cell_rng(config.seed, b, ci, i), plates[b])
        effect, strength = effects[compound]
        out.append(render(cell, effect, strength * scale, plates[b], config.image_size))
    return np.stack(out) if out else np.zeros((0, config.image_size, config.image_size, 3), np.uint8)


def screen_dir(data_dir: Path, config: ScreenConfig) -> Path:
    return Path(data_dir) / "synthetic" / f"screen-{config.digest()}"
