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


def _import_graph() -> dict[str, set[str]]:
    """Every import statement of the suite's packages (module level and inside functions) as module -> modules."""
    import ast
    from pathlib import Path

    root = Path(__file__).parents[2]
    files = {}
    for pkg in ("benchmark", "methods", "tasks"):
        for p in (root / pkg).rglob("*.py"):
            parts = p.relative_to(root).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    graph: dict[str, set[str]] = {m: set() for m in files}
    for name, p in files.items():
        here = name if p.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [base, *(f"{base}.{a.name}" for a in node.names)]
            else:
                continue
            for t in targets:
                while t and t not in files:
                    t = t.rpartition(".")[0]
                if t and t != name:
                    graph[name].add(t)
    return graph


def test_no_import_cycle_runs_through_the_suite():
    graph, state, path = _import_graph(), {}, []

    def visit(m: str) -> None:
        state[m] = "open"
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(n):] + [n]))
            if n not in state:
                visit(n)
        path.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert len(graph) > 50  # the walk saw the packages


def test_the_registry_imports_no_method_or_task_module():
    """Built-ins are declared as "module:object" strings, resolved on first use."""
    assert {m for m in _import_graph()["benchmark.registry"] if m.split(".")[0] in ("methods", "tasks")} == set()


def test_the_foundation_imports_no_method_or_task_at_import_time():
    """`benchmark/` is what methods and tasks build on: it may reach one only when a command needs it (inside a
    function), never when a module is imported. Checked on the statements that run at import time."""
    import ast

    root = Path(__file__).parents[2]
    upward = []
    for p in sorted((root / "benchmark").rglob("*.py")):
        pending = list(ast.parse(p.read_text()).body)
        while pending:
            node = pending.pop()
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue  # runs when called
            if isinstance(node, ast.Import):
                upward += [(p.name, a.name) for a in node.names if a.name.split(".")[0] in ("methods", "tasks")]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("methods", "tasks"):
                upward.append((p.name, node.module))
            pending += list(ast.iter_child_nodes(node))
    assert upward == []
