"""The `reference` profiles are the configurations behind the committed reference results: a change to a shared
profile (the CPU `quick` one, say) must not move them away from what `results/runs` records."""

import dataclasses
import json
from pathlib import Path

import pytest

from benchmark.registry import METHODS
from benchmark.runner import resolve_method

RUNS = Path(__file__).resolve().parents[2] / "results" / "runs"


def _recorded() -> list[tuple[str, dict]]:
    out = []
    for manifest in sorted(RUNS.glob("*/manifest.json")):
        m = json.loads(manifest.read_text())
        if m["profile"] == "reference":
            out.append((manifest.parent.name, m))
    return out


RECORDED = _recorded()


@pytest.mark.parametrize("run,manifest", RECORDED, ids=[r for r, _ in RECORDED])
def test_the_reference_profile_resolves_to_the_config_its_committed_runs_recorded(run, manifest):
    """An option added since is allowed only at its default (which must keep the old behaviour); the fields `fit`
    fills from the data are not the profile's."""
    cls, config = resolve_method(manifest["method"], "reference", list(manifest["overrides"]))
    resolved = json.loads(json.dumps(dataclasses.asdict(config)))  # tuples as the manifest's lists
    defaults = json.loads(json.dumps(dataclasses.asdict(cls.Config())))
    by_fit = {f.name for f in dataclasses.fields(cls.Config) if f.metadata.get("set_by_fit")}
    added = {k: v for k, v in resolved.items() if k not in manifest["config"]}
    assert added == {k: defaults[k] for k in added}
    assert {k: v for k, v in resolved.items() if k not in set(added) | by_fit} == \
        {k: v for k, v in manifest["config"].items() if k not in by_fit}


def test_every_method_with_a_reference_profile_has_committed_reference_runs_of_three_seeds():
    with_profile = {n for n in METHODS.names() if "reference" in METHODS.get(n).profiles}
    seeds = {n: {m["seed"] for _, m in RECORDED if m["method"] == n and m["task"]["name"] == "synthetic"}
             for n in with_profile}
    assert seeds == {n: {0, 1, 2} for n in with_profile}


# settings that count steps: the long profile scales them with the steps, so that only the budget differs
STEP_COUNTS = {"cellflow": (), "impa": ("ds_iter",), "mit": (), "phendiff": ("warmup_steps",)}


@pytest.mark.parametrize("method", sorted(STEP_COUNTS))
def test_the_long_profile_is_the_reference_profile_at_six_times_the_steps(method):
    _, reference = resolve_method(method, "reference", [])
    _, long = resolve_method(method, "long", [])
    ref, lng = dataclasses.asdict(reference), dataclasses.asdict(long)
    scaled = ("steps", *STEP_COUNTS[method])
    assert {k: lng[k] for k in scaled} == {k: 6 * ref[k] for k in scaled}
    assert lng["curve_points"] == ref["curve_points"] + 3  # the same spacing reaches back to as early a step
    assert {k: v for k, v in lng.items() if k not in (*scaled, "curve_points")} == \
        {k: v for k, v in ref.items() if k not in (*scaled, "curve_points")}
