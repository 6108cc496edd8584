#!/usr/bin/env python3
"""Module import graph of src/ (from `use crate::…` and `crate::x::` paths) and its cycles.

Exits 1 on a cycle: modules that import each other cannot be read (or changed) one at a time,
which is what the layout of src/ promises. The same graph collapsed to src/'s top-level
folders must follow LAYERS: each imports only from itself or a layer below, so that a file's
place tells what it may use. A new top-level module must be given a layer here."""
import re, sys, pathlib

# src/'s top-level modules, top layer first.
LAYERS = ["commands", "receive", "steps", "state", "infra", "config"]
src = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "src")
mods = {}
for f in sorted(src.rglob("*.rs")):
    rel = f.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "mod": parts = parts[:-1]
    if parts in (["main"], ["lib"]): continue
    mods["::".join(parts)] = f.read_text()
names = set(mods)
def strip_tests(t):
    i = t.find("#[cfg(test)]\nmod tests")
    return t if i < 0 else t[:i]
graph = {}
for m, text in mods.items():
    text = strip_tests(text)
    deps = set()
    # expand `use crate::{a, b::{c}}` groups roughly
    for g in re.finditer(r"crate::((?:[a-z_]+::)*)\{([^{};]*)\}", text):
        for item in g.group(2).split(","):
            item = item.strip()
            if item:
                deps.add(g.group(1) + ("" if item == "self" else item))
    for p in re.findall(r"crate::((?:[a-z_]+::)*[a-z_]+)", text):
        deps.add(p)
    # super:: paths
    parent = m.rsplit("::", 1)[0] if "::" in m else ""
    for p in re.findall(r"super::((?:[a-z_]+::)*[a-z_]+)", text):
        deps.add((parent + "::" + p) if parent else p)
    out = set()
    for d in deps:
        segs = d.split("::")
        # longest prefix that is a module
        for k in range(len(segs), 0, -1):
            cand = "::".join(segs[:k])
            if cand in names:
                if cand != m and not m.startswith(cand + "::") : out.add(cand)
                break
    graph[m] = sorted(out)
for m in sorted(graph):
    print(f"{m:22} -> {', '.join(graph[m])}")
# Tarjan SCC
idx, low, on, stack, sccs, c = {}, {}, set(), [], [], [0]
def visit(v):
    idx[v] = low[v] = c[0]; c[0] += 1; stack.append(v); on.add(v)
    for w in graph[v]:
        if w not in idx: visit(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: sccs.append(sorted(comp))
sys.setrecursionlimit(10000)
for v in sorted(graph):
    if v not in idx: visit(v)
failed = False
if sccs:
    for s in sccs: print("CYCLE among:", ", ".join(s))
    failed = True
# Layers: every top-level area known, and every import between two areas downward (which
# also rules out a cycle among areas).
area = lambda m: m.split("::")[0]
for m in sorted(graph):
    if area(m) not in LAYERS:
        print(f"NO LAYER for {area(m)} (src/{area(m)}): add it to LAYERS in {sys.argv[0]}")
        failed = True
        continue
    for d in graph[m]:
        if area(d) in LAYERS and LAYERS.index(area(d)) < LAYERS.index(area(m)):
            print(f"UPWARD IMPORT: {m} imports {d}, but {area(m)} is below {area(d)} in LAYERS")
            failed = True
if failed:
    sys.exit(1)
print(f"no cycles among {len(graph)} modules; {len(LAYERS)} layers, every import downward")
