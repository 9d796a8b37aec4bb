import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchmark.errors import BenchmarkError
from benchmark.registry import METHODS, TASKS

ROOT = Path(__file__).parents[2]


def make_plugin(tmp_path: Path) -> Path:
    """A pip-installed-looking package: module + dist-info with an entry point."""
    site = tmp_path / "site"
    (site / "bench_plugin_demo").mkdir(parents=True)
    (site / "bench_plugin_demo" / "__init__.py").write_text(textwrap.dedent('''
        from benchmark.method import Capabilities, Method

        class Blur(Method):
            name = "blur-demo"
            capabilities = Capabilities(unseen_perturbations=True)
            def fit(self, data, *, seed, workdir):
                return {}
            def generate(self, request, *, seed):
                import torch.nn.functional as F
                return F.avg_pool2d(request.controls, 3, 1, 1)
    '''))
    dist = site / "bench_plugin_demo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bench-plugin-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[cellflow_bench.methods]\nblur-demo = bench_plugin_demo:Blur\n")
    return site


def test_plugin_package_is_discovered_without_editing_the_suite(tmp_path):
    site = make_plugin(tmp_path)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]))
    out = subprocess.run([sys.executable, "-m", "benchmark", "list"], env=env, capture_output=True, text=True, check=True).stdout
    assert "blur-demo" in out and "plugin bench_plugin_demo:Blur" in out
    # and without the plugin on the path it is absent
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "benchmark", "list"], env=env, capture_output=True, text=True, check=True).stdout
    assert "blur-demo" not in out


def test_unknown_names_are_clear_errors():
    with pytest.raises(BenchmarkError, match="unknown method 'nope'; available: .*identity"):
        METHODS.get("nope")
    with pytest.raises(BenchmarkError, match="unknown task 'nope'; available: .*synthetic"):
        TASKS.get("nope")
