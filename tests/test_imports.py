"""The package's import structure: the pure analysis loads without torch, and no module imports itself back.

Both are structural checks (which modules a fresh interpreter holds; the import graph read from the source),
so a busy host cannot make them pass or fail by chance.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from conftest import HANG_GUARD_S
from optuna.storages.journal import JournalFileBackend
from optuna.storages.journal import JournalStorage

PACKAGE = Path(__file__).resolve().parent.parent / "autoprune"
DEEP = ("torch", "torch_pruning", "onnxruntime", "sklearn", "optuna_dashboard")


def _loaded_after(code: str) -> list[str]:
    """The DEEP libraries a fresh interpreter holds after running ``code``."""
    probe = f"{code}\nimport sys\nprint(sorted(m for m in {DEEP!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stderr
    return ast.literal_eval(proc.stdout.strip().splitlines()[-1])


def test_the_analysis_package_loads_without_torch_or_onnxruntime() -> None:
    assert _loaded_after("import autoprune.analysis") == []


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_reading_a_study_from_a_storage_loads_no_torch(tmp_path: Path) -> None:
    journal = tmp_path / "study.log"
    backend = JournalStorage(JournalFileBackend(str(journal)))
    study = optuna.create_study(study_name="s", storage=backend, directions=["maximize", "maximize"])
    study.add_trial(optuna.trial.create_trial(values=[0.9, 2.0]))
    sqlite = f"sqlite:///{tmp_path / 'studies.db'}"
    optuna.copy_study(from_study_name="s", from_storage=backend, to_storage=sqlite)
    for url in (f"journal:{journal}", sqlite):  # the journal's path is read by autoprune.search.storage
        code = (
            "from autoprune.analysis import load_trials, open_study\n"
            f"with open_study({url!r}, 's') as study:\n"
            "    assert len(study.trials) == 1\n"
            f"assert len(load_trials({url!r}, 's')) == 1\n"
        )
        assert _loaded_after(code) == [], url


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(module: str, tree: ast.Module, modules: set[str]) -> set[str]:
    """The package's modules ``module`` imports anywhere (function bodies too), its own ancestors left out.

    ``from a.b import c`` imports ``a.b`` and, when ``c`` is a module, ``a.b.c``; importing a module runs its
    packages' ``__init__`` first, so those count too, except the importer's own packages (already running).
    Imports under ``if TYPE_CHECKING:`` never run and are skipped.
    """
    skipped = {
        id(node)
        for stmt in tree.body
        if isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test)
        for node in ast.walk(stmt)
    }
    targets: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            targets |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            targets |= {a.name for a in node.names}
    out: set[str] = set()
    for target in targets & modules:
        parts = target.split(".")
        out |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return {m for m in out & modules if m != module and not module.startswith(m + ".")}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt, path + [nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_no_import_cycle_even_counting_function_local_imports() -> None:
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    graph = {m: _imported(m, ast.parse(p.read_text()), modules) for m, p in paths.items()}
    assert graph["autoprune.analysis.frame"], "the walk must see the analysis' imports"
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_one() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
