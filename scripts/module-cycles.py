#!/usr/bin/env python3
"""Module-level dependency cycles of a crate, from cargo-modules' graph.

`cargo modules dependencies --acyclic` checks the *item* graph, where a type
and its own methods already form a cycle; what we want acyclic is the graph
of modules. This folds each item into the module that defines it, keeps the
"uses" edges between different modules, and prints every strongly connected
component with more than one module (exit 1), or "no module cycles" (exit 0).

    cargo modules dependencies --lib -p berth-daemon --no-externs \
        --no-sysroot --no-owns | scripts/module-cycles.py

cargo-modules does not see every path inside function bodies, so the same
check also runs over the sources: `scripts/module-cycles.py daemon/src`
reads every `crate::…` and `super::…` path (in `use` lines and in code),
resolves it to the longest module prefix, and reports cycles the same way.
"""

import re
import sys

from pathlib import Path


def source_graph(root):
    """Module graph from the sources under `root` (a crate's src dir)."""
    root = Path(root)
    mods = {}
    for f in sorted(root.rglob("*.rs")):
        # Test code is left out, as cargo-modules leaves it out by default.
        if f.name == "tests.rs":
            continue
        rel = f.relative_to(root).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] in ("mod", "lib", "main"):
            parts = parts[:-1]
        mods["::".join(["crate", *parts])] = f
    path_re = re.compile(r"\b((?:crate|super)(?:::(?:super|[a-z_][a-z0-9_]*))*)(?:::|\b)")
    graph = {m: set() for m in mods}
    for m, f in mods.items():
        for line in f.read_text().splitlines():
            if re.match(r"\s*mod tests \{", line):
                break
            code = line.split("//", 1)[0]
            for hit in path_re.finditer(code):
                segs = hit.group(1).split("::")
                if segs[0] == "super":
                    base = m.split("::")
                    while segs and segs[0] == "super":
                        base, segs = base[:-1], segs[1:]
                    segs = base + segs
                # The longest prefix that is a module is what is used.
                while segs and "::".join(segs) not in mods:
                    segs = segs[:-1]
                target = "::".join(segs)
                if target and target != m:
                    graph[m].add(target)
    return graph


node_re = re.compile(r'^\s*"([^"]+)" \[label="([^|"]*)\|')
edge_re = re.compile(r'^\s*"([^"]+)" -> "([^"]+)" \[label="uses"')

modules, items, edges = set(), set(), []
source_mode = len(sys.argv) > 1
for line in [] if source_mode else sys.stdin:
    if m := edge_re.match(line):
        edges.append((m.group(1), m.group(2)))
    elif m := node_re.match(line):
        path, kind = m.groups()
        items.add(path)
        if kind == "crate" or kind.endswith(" mod"):
            modules.add(path)

if source_mode:
    pass
elif not modules:
    sys.exit("no modules in the input: pipe `cargo modules dependencies` into this")

graph = {m: set() for m in modules}


def module_of(path):
    """The module defining `path`: itself if a module, else the nearest
    enclosing path that is a module or that names no item at all
    (cargo-modules leaves out some modules, e.g. ones holding only types;
    the path of a method's type is an item, so it is skipped)."""
    while path not in modules:
        path = path.rsplit("::", 1)[0]
        if path not in items:
            modules.add(path)
            graph.setdefault(path, set())
    return path


for a, b in edges:
    ma, mb = module_of(a), module_of(b)
    if ma != mb:
        graph[ma].add(mb)
modules.update(graph)
if source_mode:
    graph = source_graph(sys.argv[1])
    modules = set(graph)

# Tarjan's strongly connected components, iteratively (no recursion limit).
index, low, on_stack, stack, sccs, counter = {}, {}, set(), [], [], [0]
for root in sorted(graph):
    if root in index:
        continue
    work = [(root, iter(sorted(graph[root])))]
    index[root] = low[root] = counter[0]
    counter[0] += 1
    stack.append(root)
    on_stack.add(root)
    while work:
        v, it = work[-1]
        w = next(it, None)
        if w is not None:
            if w not in index:
                index[w] = low[w] = counter[0]
                counter[0] += 1
                stack.append(w)
                on_stack.add(w)
                work.append((w, iter(sorted(graph[w]))))
            elif w in on_stack:
                low[v] = min(low[v], index[w])
            continue
        work.pop()
        if work:
            low[work[-1][0]] = min(low[work[-1][0]], low[v])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

n_edges = sum(len(v) for v in graph.values())
print(f"{len(modules)} modules, {n_edges} module-to-module use edges")
if not sccs:
    print("no module cycles")
    sys.exit(0)
for comp in sccs:
    members = set(comp)
    print(f"cycle among {len(comp)} modules:")
    for m in comp:
        deps = sorted(graph[m] & members)
        print(f"  {m} -> {', '.join(deps)}")
sys.exit(1)
