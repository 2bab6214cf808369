"""Draw benchroute's module import graph and list its import circles.

Reads every module under ``benchroute/`` with :mod:`ast` (nothing is imported), keeps the
imports of other benchroute modules, and prints the graph as text (``module -> imports``) or as
Graphviz DOT, then each import circle (a strongly connected component of more than one module).
Imports inside functions count too: a circle through a lazy import is still two modules that
need each other. Imports under ``if TYPE_CHECKING:`` are left out (they never run).

It also checks the layers of docs/architecture.md (:data:`LAYERS`): every import must point to
the importer's layer or one below. Usage: ``python scripts/import_graph.py [--dot] [--package
benchroute]``; exit status 1 when there is a circle or an upward import, so the check can run in
CI.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                for sub in ast.walk(child):
                    if hasattr(sub, "lineno"):
                        lines.add(sub.lineno)
    return lines


def imports_of(path: Path, name: str, modules: set[str]) -> set[str]:
    """The benchroute modules that ``path`` imports (a package import counts as its __init__;
    ``from pkg import sub`` counts as the submodule when ``pkg.sub`` is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_lines(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in modules:
                    out.add(sub)
                elif base in modules:
                    out.add(base)
    out.discard(name)
    return out


def graph(package: Path) -> dict[str, set[str]]:
    files = {module_name(p, package): p for p in sorted(package.rglob("*.py"))}
    mods = set(files)
    return {m: imports_of(p, m, mods) for m, p in files.items()}


def circles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(g):
        if root in index:
            continue
        work = [(root, iter(sorted(g[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(sorted(g[nxt]))))
                elif nxt in on:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return sorted(out)


#: The layers of docs/architecture.md, top to bottom: a module may import its own layer or
#: those below it. The first prefix that matches a module decides its layer.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("entry points", ("benchroute.__main__", "benchroute.cli", "benchroute.serve",
                      "benchroute.experiments", "benchroute.scale")),
    ("default router", ("benchroute.default",)),
    ("router", ("benchroute.router", "benchroute.routing", "benchroute.persistence",
                "benchroute.task", "benchroute.params", "benchroute.new_models",
                "benchroute.pool_state")),
    ("method", ("benchroute.selection", "benchroute.reference", "benchroute.predictors",
                "benchroute.stacking",
                "benchroute.tuning", "benchroute.policies", "benchroute.inputs",
                "benchroute.ood", "benchroute.shift")),
    ("data, embedding, index", ("benchroute.data", "benchroute.embedding", "benchroute.index",
                                "benchroute.faiss_check", "benchroute.packs", "benchroute.npz",
                                "benchroute.prompt_file",
                                "benchroute._persist")),
    ("formulas", ("benchroute.scoring", "benchroute.curves", "benchroute.exceptions",
                  "benchroute.extras", "benchroute.deprecation", "benchroute.sampling",
                  "benchroute.warning_site", "benchroute.memo")),
]


def layer_of(module: str) -> int | None:
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    return None  # the package itself (``benchroute``): its lazy exports sit above everything


def upward(g: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Imports of a module in a higher layer than the importer."""
    out = []
    for m in sorted(g):
        lm = layer_of(m)
        for t in sorted(g[m]):
            lt = layer_of(t)
            if lm is not None and lt is not None and lt < lm:
                out.append((m, t))
    return out


def read_listing(path: Path) -> dict[str, set[str]]:
    """A graph saved as this script prints it (``module -> a, b`` per line), e.g. the layout
    before a change, so that it can be drawn again."""
    g: dict[str, set[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if " -> " not in line:
            continue
        m, targets = line.split(" -> ", 1)
        g[m.strip()] = {t.strip() for t in targets.split(",") if t.strip() not in ("", "-")}
    return g


def collapse(g: dict[str, set[str]]) -> tuple[dict[str, set[str]], set[str], set[tuple[str, str]]]:
    """The graph with each subpackage (``benchroute.data``, ``benchroute.serve``, ...) as one
    node: readable at a glance. Returns it, the nodes with an import circle inside, and the
    collapsed edges that carry a circle's import."""
    packages = {m.rsplit(".", 1)[0] for m in g if m.count(".") >= 2}

    def node(m: str) -> str:
        head = ".".join(m.split(".")[:2])
        return head if head in packages else m

    in_circle = {(a, b) for comp in circles(g) for a in comp for b in g[a] if b in comp}
    out: dict[str, set[str]] = {}
    inner: set[str] = set()
    hot: set[tuple[str, str]] = set()
    for m, targets in g.items():
        a = node(m)
        out.setdefault(a, set())
        for t in targets:
            b = node(t)
            if a == b:
                inner |= {a} if (m, t) in in_circle else set()
                continue
            out[a].add(b)
            if (m, t) in in_circle:
                hot.add((a, b))
    return out, inner, hot


def dot(g: dict[str, set[str]], whole_packages: bool = False) -> str:
    """Graphviz DOT, one box per layer of docs/architecture.md; edges of an import circle are
    red (a subpackage with a circle inside is a red node), upward imports dashed red."""
    if whole_packages:
        g, inner, hot = collapse(g)
    else:
        inner = set()
        hot = {(a, b) for comp in circles(g) for a in comp for b in g[a] if b in comp}
    up = set(upward(g))
    lines = ["digraph benchroute {", "  rankdir=TB; newrank=true; node [shape=box, fontsize=11];"]
    for i, (name, _) in enumerate(LAYERS):  # one row per layer, its name at the left
        members = sorted(m for m in g if layer_of(m) == i)
        lines.append(f'  {{ rank=same; "layer {i}" [label="{name}", shape=plaintext, '
                     'fontsize=14];')
        lines += [f'    "{m}"{" [color=red]" if m in inner else ""};' for m in members]
        lines.append("  }")
        if i:
            lines.append(f'  "layer {i - 1}" -> "layer {i}" [style=invis];')
    for m in sorted(g):
        for t in sorted(g[m]):
            style = " [color=red]" if (m, t) in hot else ""
            style = " [color=red, style=dashed]" if (m, t) in up else style
            lines.append(f'  "{m}" -> "{t}"{style};')
    return "\n".join(lines + ["}"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", default=str(Path(__file__).resolve().parents[1] / "benchroute"))
    ap.add_argument("--listing", type=Path, help="draw or check a saved listing (this script's "
                    "text output) instead of the package")
    ap.add_argument("--dot", action="store_true", help="print Graphviz DOT instead of text")
    ap.add_argument("--packages", action="store_true", help="with --dot: one node per subpackage")
    args = ap.parse_args(argv)
    g = read_listing(args.listing) if args.listing else graph(Path(args.package))
    if args.dot:
        print(dot(g, args.packages))
    else:
        for m in sorted(g):
            print(f"{m} -> {', '.join(sorted(g[m])) or '-'}")
    found = circles(g)
    stream = sys.stderr if args.dot else sys.stdout
    print(f"\n{len(found)} import circle(s)", file=stream)
    for comp in found:
        print("  " + " <-> ".join(comp), file=stream)
    up = upward(g)
    print(f"{len(up)} upward import(s) across the layers of docs/architecture.md", file=stream)
    for m, t in up:
        print(f"  {m} -> {t}", file=stream)
    return 1 if found or up else 0


if __name__ == "__main__":
    sys.exit(main())
