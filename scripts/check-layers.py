#!/usr/bin/env python3
"""check-layers.py — the dependency rules of src/, checked on every include.

The layer order is read from docs/architecture.md (the numbered list under
"## Layers": "1. `common` — ..."), the single place it is written. A module
is a .c file with its .h (src/conn/conn.c and src/conn/conn.h are module
conn/conn). The rules:

  1. every folder of src/ is a layer of the list;
  2. a module includes modules of its own layer or of earlier ones, never of
     a later one;
  3. no modules include each other, directly or around a circle.

Prints every violation and exits 1, or prints a one-line summary and exits 0.
Usage: check-layers.py [--src DIR] [--doc FILE]
"""
import argparse
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
LAYER = re.compile(r"^\s*(\d+)\.\s+`([A-Za-z0-9_]+)`")


def read_layers(doc):
    """The layer names in order, from the numbered list under '## Layers'."""
    layers, inside = [], False
    with open(doc, encoding="utf-8") as f:
        for line in f:
            if line.startswith("## "):
                inside = line.strip() == "## Layers"
                continue
            m = LAYER.match(line) if inside else None
            if m:
                if int(m.group(1)) != len(layers) + 1:
                    raise SystemExit(f"{doc}: layer {m.group(2)} is numbered {m.group(1)}, "
                                     f"expected {len(layers) + 1}")
                layers.append(m.group(2))
    if not layers:
        raise SystemExit(f"{doc}: no numbered list of layers under '## Layers'")
    return layers


def modules(src):
    """module -> the set of modules it includes, from every .c and .h under src."""
    deps = {}
    for root, _, files in os.walk(src):
        for name in sorted(files):
            if not name.endswith((".c", ".h")):
                continue
            path = os.path.join(root, name)
            mod = os.path.relpath(path, src)[:-2]
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
            for inc in INCLUDE.findall(text):
                target = inc[:-2] if inc.endswith(".h") else inc
                if os.path.exists(os.path.join(src, inc)) and target != mod:
                    deps.setdefault(mod, set()).add(target)
            deps.setdefault(mod, set())
    return deps


def cycles(deps):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(deps.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(deps):
        if v not in index:
            visit(v)
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default=os.path.join(here, "..", "src"))
    ap.add_argument("--doc", default=os.path.join(here, "..", "docs", "architecture.md"))
    args = ap.parse_args()

    layers = read_layers(args.doc)
    rank = {name: i for i, name in enumerate(layers)}
    deps = modules(args.src)
    errors = []
    folders = sorted(d for d in os.listdir(args.src) if os.path.isdir(os.path.join(args.src, d)))
    for d in folders:
        if d not in rank:
            errors.append(f"src/{d}/ is in no layer of {args.doc} (## Layers)")
    for mod in sorted(deps):
        for dep in sorted(deps[mod]):
            a, b = mod.split("/")[0], dep.split("/")[0]
            if a in rank and b in rank and rank[b] > rank[a]:
                errors.append(f"src/{mod} includes {dep}.h: layer {a} ({rank[a] + 1}) "
                              f"may not include the later layer {b} ({rank[b] + 1})")
    for comp in cycles(deps):
        errors.append("modules include each other in a cycle: " + " ".join(comp))
    for e in errors:
        print(f"check-layers: {e}", file=sys.stderr)
    if errors:
        return 1
    edges = sum(len(v) for v in deps.values())
    print(f"check-layers: {len(deps)} modules in {len(layers)} layers, {edges} includes, "
          "no upward include, no cycle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
