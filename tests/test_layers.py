"""The package's layers: imports point down only, no module imports another that imports it back, and the light
layers stay light (the config without torch; the deployment side without Accelerate, a simulator or the trainer)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "visual_lps"

LAYERS = [
    ("visual_lps", "visual_lps.config", "visual_lps.observations"),
    ("visual_lps.nn", "visual_lps.data"),
    ("visual_lps.agents",),
    ("visual_lps.runs",),
    ("visual_lps.deploy",),
    ("visual_lps.envs",),
    ("visual_lps.tasks",),
    ("visual_lps.training",),
    ("visual_lps.cli",),
]
"""bottom to top: a module may import its own layer's modules and those of the layers below, never above"""


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The package modules `path` imports anywhere (in functions too), but for type-checking-only imports."""
    tree = ast.parse(path.read_text())
    typing_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(block.test) for stmt in block.body for node in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            if name.startswith("visual_lps"):
                while name not in modules and "." in name:
                    name = name.rsplit(".", 1)[0]
                found.add(name)
    found.discard(module_name(path))
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports(path, set(paths)) for name, path in paths.items()}


def layer(module: str) -> int:
    best = max(((i, prefix) for i, prefixes in enumerate(LAYERS) for prefix in prefixes
                if module == prefix or module.startswith(prefix + ".")), key=lambda x: len(x[1]))
    return best[0]


def test_every_import_points_down_the_layers():
    upward = [f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
              for module, targets in import_graph().items() for target in targets
              if layer(target) > layer(module) and target != "visual_lps"]
    assert not upward, "\n".join(sorted(upward))


def test_no_import_cycles():
    graph = import_graph()
    cycles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    # a package's __init__ re-exporting its own modules is not a cycle of concepts
    cycles = [c for c in cycles if not all(part.startswith(c.split(" -> ")[0]) for part in c.split(" -> "))]
    assert not cycles, "\n".join(cycles)


def loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return set(result.stdout.split())


def test_the_config_imports_no_torch_and_no_agent():
    loaded = loaded_after("import visual_lps.config")
    assert not {"torch", "kornia", "accelerate", "visual_lps.agents", "visual_lps.tasks"} & loaded


def test_the_deploy_layer_imports_no_accelerate_simulator_or_trainer():
    loaded = loaded_after("import visual_lps.deploy.policy, visual_lps.deploy.serving, visual_lps.deploy.execution, "
                          "visual_lps.deploy.export, visual_lps.runs.checkpoints")
    heavy = {"accelerate", "ogbench", "mujoco", "gymnasium", "tensorboard", "visual_lps.training",
             "visual_lps.tasks", "visual_lps.envs"}
    assert not {m for m in loaded if m.split(".")[0] in heavy or m.startswith(tuple(heavy))}
