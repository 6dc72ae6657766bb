"""The tree's contracts, read from the source: no import cycle (static imports, `importlib` targets and
"module:Class" entry points included), no module reading another object's private attribute, and TorchRL's
private hooks named in one adapter module only."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGES = ["agents", "algorithms", "evaluation", "lsp", "lsp_env", "benchmarks"]
TORCHRL_PRIVATE = ("_log_weight", "_compute_policy_objective", "_aggregate_loss_value", "_kl_to_ref",
                   "_set_in_keys", "_get_cur_log_prob", "_cur_log_prob")
ADAPTER = "algorithms/torchrl_adapter.py"


def sources() -> dict[str, Path]:
    """Module name -> file, for every module of the packages."""
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imported(node: ast.AST) -> list[str]:
    """What a node makes Python import: an import statement, `importlib.import_module("m")`, a "m:Class"
    entry point, or a {name: "benchmarks.m"} table that `lsp bench` imports."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and not node.level:
        return [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(r"[a-z_.]+:\w+", node.value):
        return [node.value.split(":")[0]]
    if (isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("import_module", "find_spec")
            and node.args and isinstance(node.args[0], ast.Constant)):
        return [node.args[0].value]
    if isinstance(node, ast.Dict) and node.values and all(
            isinstance(v, ast.Constant) and str(v.value).startswith("benchmarks.") for v in node.values):
        return [v.value for v in node.values]
    return []


def import_graph() -> dict[str, set[str]]:
    modules = sources()
    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            for target in imported(node):
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):  # parents load first anyway
                    edges.add(target)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_including_importlib_and_entry_points():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle_through_a_benchmark_table():
    graph = {"lsp.bench": {"benchmarks.learning_result"}, "benchmarks.learning_result": {"evaluation.evaluate"},
             "evaluation.evaluate": {"lsp.bench"}, "agents.hf": set()}
    assert cycles(graph) == [["benchmarks.learning_result", "evaluation.evaluate", "lsp.bench"]]
    node = ast.parse('BENCHMARKS = {"x": "benchmarks.speed"}').body[0].value
    assert imported(node) == ["benchmarks.speed"]


PUBLIC_DESPITE_THE_UNDERSCORE = {"os._exit"}  # documented in the standard library


def test_no_module_reads_another_objects_private_attribute():
    reads = []
    for name, path in sources().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")):
                continue
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            if isinstance(owner, ast.Call) and getattr(owner.func, "id", None) == "super":
                continue
            if path.relative_to(ROOT).as_posix() == ADAPTER and ast.unparse(node) == "GRPOLoss._AcceptedKeys":
                continue  # TorchRL's documented way to declare a loss's keys
            if ast.unparse(node) in PUBLIC_DESPITE_THE_UNDERSCORE:
                continue
            reads.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert reads == []


def test_torchrl_private_hooks_appear_in_the_adapter_only():
    named = [f"{path.relative_to(ROOT)}: {hook}" for path in sources().values()
             for hook in TORCHRL_PRIVATE if re.search(rf"\b{hook}\b", path.read_text())
             and path.relative_to(ROOT).as_posix() != ADAPTER]
    assert named == []
    assert "torchrl 0.14.1" in (ROOT / ADAPTER).read_text()
