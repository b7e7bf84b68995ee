"""The layout rules of ``docs/architecture.md`` and style points 10-12, read from the source.

Every ``.py`` file of ``pipeline/``, ``producers/`` and ``consumers/`` is parsed with
:mod:`ast` (nothing is imported). Every import statement counts: at module level, inside
functions, under ``if TYPE_CHECKING:``; text in docstrings (doctests) is not code and does not.

1. **Layers point one way.** No module under ``pipeline/`` except ``pipeline/cli/**`` imports
   ``producers`` or ``consumers``.

2. **No import cycles** among the first-party modules. The graph has an edge from module *m* to
   every first-party module an import statement of *m* can make Python execute:

   * ``import a.b.c`` and ``from a.b.c import x``: ``a.b.c``, and ``a.b.c.x`` too when that is a
     submodule (``from pkg import sub``); relative imports are resolved against *m*'s package;
   * the packages on the way (``a``, ``a.b``), whose ``__init__`` runs first, except the
     packages *m* is itself inside: those have started running before *m* did, so reaching
     them runs nothing new;
   * a package ``__init__`` importing its own submodules is an edge like any other.

   So a sibling that imports its package's ``__init__`` (``from producers.campaigns import X``
   inside ``producers/campaigns/``), which imports the first module, closes a cycle, while the
   ordinary ``__init__`` re-exporting its submodules does not. A lazy (function-level) or
   ``TYPE_CHECKING`` import still counts: it hides a cycle, it does not break it. For each knot
   (strongly connected component) one shortest cycle is reported as a chain ``a -> b -> a``,
   with the file and line of each import, and the knot's other members.

3. **No module-level mutable state.** A ``global`` statement anywhere is a failure. A name bound
   at module level (``=``, ``: T =``, ``+=``, also inside a module-level ``if``/``try``/
   ``with``/``for``) to a *mutable value* is a failure, unless it is ``__all__`` or a constant
   that nothing mutates. A mutable value is:

   * a list, dict or set display or comprehension;
   * a call of a mutable container or a stateful stdlib object (:data:`MUTABLE_FACTORIES`:
     ``dict()``, ``list()``, ``set()``, ``defaultdict()``, ``OrderedDict()``,
     ``collections.Counter()``, ``deque()``, ``queue.Queue()``, locks and events,
     ``itertools.count()``, ``random.Random()``, ...), names resolved through the module's
     imports (so ``prometheus_client.Counter`` is not ``collections.Counter``);
   * an instance of a first-party class that is not a frozen dataclass.

   A constant is an ALL_CAPS name (``DELAY_WORDS``, ``_TYPES``) or a name annotated ``Final``;
   it passes only if no first-party module mutates it, directly or through an import
   (``X.append(...)`` and the other mutating methods of :data:`MUTATING_METHODS`,
   ``X[k] = v``, ``X.a = v``, ``del X[k]``, ``X += ...``). Everything else is fine: tuples,
   frozensets, ``MappingProxyType``, ``logging.getLogger(...)``, Prometheus metric objects,
   ``TypeVar``, compiled regexes, ``struct.Struct``, sentinels (``object()``), frozen
   dataclass instances, functions and classes.
   Mutation through another name (passing the constant to a function that mutates it) is out
   of reach of a syntactic check; that is why a lowercase name may not hold a mutable value at
   all. Class attributes are not module-level state and are not checked here.

:data:`ALLOWED` lists known violations left for another change, each with its reason; an
entry that no longer matches anything fails the test, so the list only shrinks.
"""

from __future__ import annotations

import ast
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pipeline", "producers", "consumers")
EDGE_PACKAGES = ("producers", "consumers")
CLI_PACKAGE = "pipeline.cli"

ALLOWED: MappingProxyType[str, str] = MappingProxyType({
    # "<rule>: <what>" -> why it is allowed for now
    "state: pipeline.logs._redactor = RedactSecrets()":
        "pipeline/logs.py was outside the change that added this test (reported to its owner)",
    "state: pipeline.logs: global _handler":
        "pipeline/logs.py was outside the change that added this test (reported to its owner)",
})

MUTABLE_FACTORIES = frozenset({
    "builtins.dict", "builtins.list", "builtins.set", "builtins.bytearray",
    "collections.defaultdict", "collections.OrderedDict", "collections.Counter",
    "collections.deque", "collections.ChainMap", "collections.UserDict", "collections.UserList",
    "weakref.WeakSet", "weakref.WeakKeyDictionary", "weakref.WeakValueDictionary",
    "queue.Queue", "queue.SimpleQueue", "queue.LifoQueue", "queue.PriorityQueue",
    "threading.Lock", "threading.RLock", "threading.Event", "threading.Condition",
    "threading.Semaphore", "threading.BoundedSemaphore", "threading.local",
    "itertools.count", "random.Random", "io.StringIO", "io.BytesIO", "array.array",
})
MUTATING_METHODS = frozenset({
    "append", "extend", "insert", "pop", "popitem", "remove", "clear", "update", "setdefault",
    "add", "discard", "sort", "reverse", "appendleft", "extendleft", "popleft", "rotate",
    "move_to_end", "subtract", "difference_update", "intersection_update",
    "symmetric_difference_update", "__setitem__", "__delitem__",
})
CONSTANT = re.compile(r"_*[A-Z][A-Z0-9_]*")


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    tree: ast.Module
    is_package: bool

    @property
    def package(self) -> str:
        """The package relative imports of this module start from."""
        return self.name if self.is_package else self.name.rpartition(".")[0]

    @property
    def rel(self) -> str:
        return self.path.relative_to(ROOT).as_posix()


def _discover() -> dict[str, Module]:
    modules: dict[str, Module] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            name = ".".join(parts)
            modules[name] = Module(name, path, ast.parse(path.read_text(), str(path)),
                                   is_package)
    return modules


MODULES = _discover()


# -- imports ------------------------------------------------------------------------------------

def _resolve(module: Module, node: ast.ImportFrom) -> str:
    """The module a ``from ... import`` statement of ``module`` reads from."""
    if not node.level:
        return node.module or ""
    base = module.package.split(".")
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imported(module: Module) -> Iterator[tuple[int, str, list[str]]]:
    """(line, module imported, names imported from it) for every import statement."""
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            yield node.lineno, _resolve(module, node), [alias.name for alias in node.names]


def _is_first_party(name: str) -> bool:
    return name.partition(".")[0] in PACKAGES


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _edges(module: Module) -> dict[str, int]:
    """First-party module -> line of the first import of ``module`` that can run it."""
    out: dict[str, int] = {}
    own = set(_ancestors(module.name)) | ({module.name} if module.is_package else set())
    for line, target, names in _imported(module):
        if not _is_first_party(target):
            continue
        submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
        reached = [p for p in _ancestors(target) if p not in own] + submodules
        if target not in own or len(submodules) < len(names):  # names read off its __init__
            reached.append(target)
        for name in reached:
            if name != module.name and name in MODULES:
                out.setdefault(name, line)
    return out


GRAPH = {name: _edges(module) for name, module in MODULES.items()}


def _knots(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan; the graph is small, recursion is fine
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, {})):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return components


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One shortest cycle through each knot of ``graph``."""
    return [_shortest_cycle(graph, knot) for knot in _knots(graph)]


def _shortest_cycle(graph: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    members = set(component)
    best: list[str] = []
    for start in component:  # breadth-first from each member back to itself
        paths = {start: [start]}
        frontier = [start]
        found: list[str] = []
        while frontier and not found:
            nxt_frontier = []
            for node in frontier:
                for nxt in sorted(graph[node]):
                    if nxt == start:
                        found = [*paths[node], start]
                        break
                    if nxt in members and nxt not in paths:
                        paths[nxt] = [*paths[node], nxt]
                        nxt_frontier.append(nxt)
                if found:
                    break
            frontier = nxt_frontier
        if found and (not best or len(found) < len(best)):
            best = found
    return best


def _chain(cycle: list[str]) -> str:
    hops = [f"{a} ({MODULES[a].rel}:{GRAPH[a][b]})" for a, b in itertools.pairwise(cycle)]
    return " -> ".join([*hops, cycle[-1]])


# -- module-level state -------------------------------------------------------------------------

def _module_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements run at import time, looking into ``if``/``try``/``with``/``for`` blocks."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, ast.If | ast.For | ast.While | ast.With | ast.Try):
            blocks = [getattr(stmt, "body", []), getattr(stmt, "orelse", []),
                      getattr(stmt, "finalbody", [])]
            blocks += [handler.body for handler in getattr(stmt, "handlers", [])]
            for block in blocks:
                yield from _module_level(block)


def _targets(stmt: ast.stmt) -> list[str]:
    """The names an assignment statement binds."""
    if isinstance(stmt, ast.Assign):
        targets = stmt.targets
    elif isinstance(stmt, ast.AnnAssign | ast.AugAssign):
        targets = [stmt.target]
    else:
        return []
    return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]


def _names(module: Module) -> dict[str, str]:
    """Name -> qualified name, for what ``module`` defines at module level and imports."""
    out: dict[str, str] = {}
    for stmt in _module_level(module.tree.body):
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out[stmt.name] = f"{module.name}.{stmt.name}"
        for name in _targets(stmt):
            out[name] = f"{module.name}.{name}"
    for node in ast.walk(module.tree):  # function-level imports too: an approximation
        if isinstance(node, ast.Import):
            for alias in node.names:
                local = alias.asname or alias.name.partition(".")[0]
                out[local] = alias.name if alias.asname else local
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            for alias in node.names:
                out[alias.asname or alias.name] = f"{target}.{alias.name}"
    return out


def _qualified(node: ast.expr, names: dict[str, str]) -> str | None:
    """The dotted name an expression like ``x``, ``mod.x`` or ``pkg.mod.x`` stands for."""
    if isinstance(node, ast.Name):
        return names.get(node.id, f"builtins.{node.id}")
    if isinstance(node, ast.Attribute):
        base = _qualified(node.value, names)
        return f"{base}.{node.attr}" if base else None
    return None


def _is_frozen_dataclass(cls: ast.ClassDef) -> bool:
    return any(isinstance(d, ast.Call) and any(
        k.arg == "frozen" and isinstance(k.value, ast.Constant) and k.value.value is True
        for k in d.keywords) for d in cls.decorator_list)


def _is_final(stmt: ast.stmt) -> bool:
    if not isinstance(stmt, ast.AnnAssign):
        return False
    annotation = stmt.annotation
    if isinstance(annotation, ast.Subscript):
        annotation = annotation.value
    return (isinstance(annotation, ast.Name) and annotation.id == "Final") or (
        isinstance(annotation, ast.Attribute) and annotation.attr == "Final")


def _mutated(module: Module, names: dict[str, str]) -> Iterator[str]:
    """Qualified names ``module`` mutates in place (see the module docstring)."""
    for node in ast.walk(module.tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in MUTATING_METHODS:
            targets.append(node.func.value)
        elif isinstance(node, ast.Assign | ast.Delete):
            targets += [t.value for t in node.targets
                        if isinstance(t, ast.Subscript | ast.Attribute)]
        elif isinstance(node, ast.AugAssign):
            changed = node.target
            targets.append(changed.value if isinstance(changed, ast.Subscript | ast.Attribute)
                           else changed)
        for target in targets:
            root = target
            while isinstance(root, ast.Subscript):  # X[k].append(v) changes X too
                root = root.value
            if name := _qualified(root, names):  # and X.a.append(v): every prefix
                parts = name.split(".")
                yield from (".".join(parts[:i]) for i in range(1, len(parts) + 1))


def _state_violations(modules: dict[str, Module]) -> Iterator[str]:
    names = {module.name: _names(module) for module in modules.values()}
    mutated = {found for module in modules.values() for found in
               _mutated(module, names[module.name])}
    classes = {f"{module.name}.{stmt.name}": stmt for module in modules.values()
               for stmt in module.tree.body if isinstance(stmt, ast.ClassDef)}

    def mutable(value: ast.expr, module_names: dict[str, str]) -> bool:
        if isinstance(value, ast.List | ast.Dict | ast.Set | ast.ListComp | ast.DictComp
                      | ast.SetComp):
            return True
        if not isinstance(value, ast.Call):
            return False
        callee = _qualified(value.func, module_names) or ""
        cls = classes.get(callee)
        return callee in MUTABLE_FACTORIES or (cls is not None and not _is_frozen_dataclass(cls))

    for module in modules.values():
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Global):
                yield f"state: {module.name}: global {', '.join(node.names)}"
        for stmt in _module_level(module.tree.body):
            value = getattr(stmt, "value", None)
            if not isinstance(value, ast.expr) or not mutable(value, names[module.name]):
                continue
            for name in _targets(stmt):
                constant = name == "__all__" or CONSTANT.fullmatch(name) or _is_final(stmt)
                if constant and f"{module.name}.{name}" not in mutated:
                    continue
                shown = ast.unparse(value)
                shown = shown if len(shown) <= 40 else shown[:37] + "..."
                yield f"state: {module.name}.{name} = {shown}"


# -- the tests ----------------------------------------------------------------------------------

def _layer_violations() -> Iterator[str]:
    for module in MODULES.values():
        if module.name.partition(".")[0] != "pipeline":
            continue
        if module.name == CLI_PACKAGE or module.name.startswith(CLI_PACKAGE + "."):
            continue
        for line, target, _ in _imported(module):
            if target.partition(".")[0] in EDGE_PACKAGES:
                yield f"layers: {module.rel}:{line} imports {target}"


def _cycle_violations() -> Iterator[str]:
    for knot in _knots(GRAPH):
        cycle = _shortest_cycle(GRAPH, knot)
        others = sorted(set(knot) - set(cycle))
        also = f" (also in this knot: {', '.join(others)})" if others else ""
        yield f"cycle: {_chain(cycle)}{also}"


def _unallowed(found: list[str], rule: str) -> list[str]:
    return [v for v in found if v not in ALLOWED and v.startswith(rule)]


def test_the_modules_are_found() -> None:
    assert {"pipeline.records", "producers.synth", "consumers.scorer"} <= set(MODULES)
    assert "pipeline.cli" in MODULES and MODULES["pipeline.cli"].is_package


def test_pipeline_outside_cli_imports_no_producer_or_consumer() -> None:
    bad = _unallowed(list(_layer_violations()), "layers")
    assert not bad, "pipeline/ (outside pipeline/cli/) must not import the edges:\n" + \
        "\n".join(bad)


def test_no_import_cycles() -> None:
    bad = _unallowed(list(_cycle_violations()), "cycle")
    assert not bad, "import cycles (lazy and TYPE_CHECKING imports count):\n" + "\n".join(bad)


def test_no_module_level_mutable_state() -> None:
    bad = _unallowed(list(_state_violations(MODULES)), "state")
    assert not bad, "module-level mutable state:\n" + "\n".join(bad)


def test_every_allowance_is_still_needed() -> None:
    found = {*_layer_violations(), *_cycle_violations(), *_state_violations(MODULES)}
    stale = sorted(set(ALLOWED) - found)
    assert not stale, "ALLOWED entries that match nothing any more, remove them:\n" + \
        "\n".join(stale)


# -- the checks checked -------------------------------------------------------------------------

def _fake(name: str, source: str, is_package: bool = False) -> Module:
    path = ROOT / (name.replace(".", "/") + ("/__init__.py" if is_package else ".py"))
    return Module(name, path, ast.parse(source), is_package)


@pytest.mark.parametrize(("importer", "source", "expected"), [
    ("producers.synth", "import producers.campaigns.base", {"producers.campaigns.base",
                                                           "producers.campaigns"}),
    ("producers.campaigns.rug_pull", "from . import base", {"producers.campaigns.base"}),
    ("producers.campaigns.rug_pull", "from producers.campaigns import Campaign",
     {"producers.campaigns"}),
    ("producers.campaigns.rug_pull", "from .base import Campaign", {"producers.campaigns.base"}),
    ("producers.campaigns.rug_pull", "from ..synth import World", {"producers.synth"}),
    ("producers.campaigns.rug_pull", "def f():\n    from producers.synth import World\n",
     {"producers.synth"}),
    ("producers.campaigns.rug_pull",
     "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from producers.synth import W\n",
     {"producers.synth"}),
    ("producers.campaigns.rug_pull", '"""\n>>> from producers.synth import World\n"""', set()),
])
def test_edges(importer: str, source: str, expected: set[str]) -> None:
    assert set(_edges(_fake(importer, source))) == expected


def test_a_package_init_is_part_of_a_cycle_through_it() -> None:
    graph = {  # campaigns/__init__ imports rug_pull, rug_pull imports base, base the __init__
        "producers.campaigns": {"producers.campaigns.rug_pull": 1},
        "producers.campaigns.rug_pull": {"producers.campaigns.base": 1},
        "producers.campaigns.base": {"producers.campaigns": 1},
    }
    assert _cycles(graph) == [["producers.campaigns", "producers.campaigns.rug_pull",
                               "producers.campaigns.base", "producers.campaigns"]]
    graph["producers.campaigns.base"] = {}  # an __init__ re-exporting is no cycle by itself
    assert _cycles(graph) == []


STATE_EXAMPLES = """
import collections
import logging
import re
from collections import defaultdict
from typing import Final

from prometheus_client import Counter

__all__ = ["f"]
log = logging.getLogger(__name__)
EVENTS = Counter("chainwatch_events", "Events")
WORD = re.compile("[a-z]+")
KINDS = frozenset({"a", "b"})
LIMITS = {"subject": 256}
NAMES: Final = ["a", "b"]
_SEEN = set()
_COUNTS = [0]
_BY_KEY = defaultdict(list)
_TALLY = collections.Counter()
cache = {}
registry = Registry()
DEFAULTS = Frozen()
if True:
    pending = []


class Registry:
    pass


@dataclass(frozen=True)
class Frozen:
    pass


def f(key: str) -> None:
    global cache
    _SEEN.add(key)
    _COUNTS[0] += 1
    _BY_KEY[key].append(1)
    _TALLY.update(key)
"""


def test_the_state_rule_on_examples() -> None:
    module = _fake("producers.example", STATE_EXAMPLES)
    found = {v.removeprefix("state: ").partition(" ")[0]
             for v in _state_violations({module.name: module})}
    assert found == {"producers.example:", *(f"producers.example.{name}" for name in (
        "_SEEN", "_COUNTS", "_BY_KEY", "_TALLY", "cache", "registry", "pending"))}


def test_a_constant_mutated_from_another_module_is_state() -> None:
    owner = _fake("producers.example", "LIMITS = {'subject': 256}\n")
    user = _fake("consumers.example",
                 "from producers import example\nfrom producers.example import LIMITS as L\n"
                 "def f() -> None:\n    L['x'] = 1\n")
    modules = {owner.name: owner, user.name: user}
    assert list(_state_violations(modules)) == [
        "state: producers.example.LIMITS = {'subject': 256}"]
