#!/usr/bin/env python3
"""The module imports of one crate: edges, cycles and layers.

usage: scripts/module-graph.py CRATE/src

Reads every .rs file under the directory, finds the paths it names through `crate::`,
`super::` and `self::` (in `use` trees, braces included, and inline in the code), and
prints each module's imports, then the import cycles (for each import that closes one, the
shortest), then the layers: each module in the lowest layer above everything it
imports (a cycle is one node, named with `<->`). `#[cfg(test)]` blocks are left out: an
inline test module is not told from its parent. Exits 1 when there is a cycle.
"""

import os
import re
import sys


def module_of(root, path):
    rel = os.path.relpath(path, root)[: -len(".rs")].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    if rel in (["lib"], ["main"]):
        return "crate"
    return "::".join(rel)


def strip(text):
    # Comments, strings and char literals out (their quotes and braces would mislead).
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            i = text.find("\n", i)
            i = n if i < 0 else i
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif m := re.match(r'b?r(#*)"', text[i : i + 260]):
            if i and (text[i - 1].isalnum() or text[i - 1] == "_"):
                out.append(c)
                i += 1
                continue
            end = text.find('"' + m.group(1), i + m.end())
            out.append('""')
            i = n if end < 0 else end + 1 + len(m.group(1))
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            out.append('""')
            i += 1
        elif m := re.match(r"'(?:\\[^']{1,10}|[^\\'])'", text[i : i + 14]):
            out.append("' '")
            i += m.end()
        else:
            out.append(c)
            i += 1
    text = "".join(out)
    # Drop each `#[cfg(test)]` item: up to its matching brace, or its `;`.
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]", text):
        if m.start() < i:
            continue
        out.append(text[i : m.start()])
        j, depth = m.end(), 0
        while j < len(text):
            c = text[j]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    j += 1
                    break
            elif c == ";" and depth == 0:
                j += 1
                break
            j += 1
        i = j
    out.append(text[i:])
    text = "".join(out)
    return text


def expand(tree):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e]."""
    tree = tree.strip()
    if "{" not in tree:
        return [tree.split(" as ")[0].strip()]
    head, rest = tree.split("{", 1)
    body = rest[: rest.rfind("}")]
    parts, depth, cur = [], 0, ""
    for c in body:
        if c == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += c == "{"
        depth -= c == "}"
        cur += c
    parts.append(cur)
    return [head + p for part in parts if part.strip() for p in expand(part)]


def absolute(module, path):
    """A `crate::`, `super::` or `self::` path as the list of its segments from the root."""
    segs = [s for s in path.replace(" ", "").split("::") if s]
    base = [] if module == "crate" else module.split("::")
    if not segs:
        return None
    if segs[0] == "crate":
        return segs[1:]
    if segs[0] in ("self", "super"):
        cur = list(base)
        while segs and segs[0] in ("self", "super"):
            if segs.pop(0) == "super":
                cur = cur[:-1]
        return cur + segs
    return None


def main():
    args = sys.argv[1:]
    if len(args) != 1:
        sys.exit(__doc__)
    root = args[0]
    files = {}
    for d, _, names in os.walk(root):
        for n in names:
            if n.endswith(".rs") and not (d == root and n == "main.rs"):
                files[module_of(root, os.path.join(d, n))] = os.path.join(d, n)
    modules = set(files)
    edges = {m: set() for m in modules}
    for m, path in files.items():
        with open(path, encoding="utf-8") as f:
            text = strip(f.read())
        paths = []
        for u in re.finditer(r"\buse\s+([^;]+);", text):
            paths += expand(u.group(1))
        paths += re.findall(r"\b(?:crate|super|self)(?:::\w+)+", text)
        # A child module named without `self::` (`monitor::Access` in topology/mod.rs): a
        # path's first segment. Its `mod` declaration and `pub use` re-exports are no import.
        code = re.sub(r"\b(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*;", "", text)
        code = re.sub(r"\bpub(?:\([^)]*\))?\s+use\s+[^;]+;", "", code)
        prefix = "" if m == "crate" else m + "::"
        for first in re.findall(r"(?<![\w:])(\w+)::", code):
            if prefix + first in modules:
                paths.append("self::" + first)
        for p in paths:
            segs = absolute(m, p)
            if segs is None:
                continue
            # The longest module the path names; an item of lib.rs is `crate`'s.
            target = "crate"
            for k in range(len(segs), 0, -1):
                name = "::".join(segs[:k])
                if name in modules:
                    target = name
                    break
            if target == m:
                continue
            edges[m].add(target)

    # Tarjan's strongly connected components.
    index, low, stack, on, sccs = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
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
            sccs.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(modules):
        if v not in index:
            visit(v)
    comp_of = {v: i for i, c in enumerate(sccs) for v in c}

    print("imports:")
    for m in sorted(modules):
        print(f"  {m} -> {', '.join(sorted(edges[m])) or '-'}")
    cycles = set()
    for a in modules:
        for b in edges[a]:
            if comp_of[a] != comp_of[b]:
                continue
            # The shortest way back from b to a closes a cycle through the edge a -> b.
            back, todo = {b: None}, [b]
            while a not in back:
                nxt = []
                for v in todo:
                    for w in sorted(edges[v]):
                        if w not in back and comp_of[w] == comp_of[a]:
                            back[w] = v
                            nxt.append(w)
                todo = nxt
            path, v = [], a
            while v is not None:
                path.append(v)
                v = back[v]
            path = [a] + path[::-1][:-1]
            k = path.index(min(path))
            cycles.add(tuple(path[k:] + path[:k]))
    print("cycles:" if cycles else "cycles: none")
    for c in sorted(cycles, key=lambda c: (len(c), c)):
        print(f"  {' -> '.join(c + (c[0],))}")
    # Tarjan emits components callees first, so a layer is known when its turn comes.
    layer = {}
    for i, c in enumerate(sccs):
        below = [layer[comp_of[b]] for a in c for b in edges[a] if comp_of[b] != i]
        layer[i] = 1 + max(below, default=-1)
    print("layers (each imports only from the ones below it):")
    for n in range(max(layer.values()), -1, -1):
        names = sorted(" <-> ".join(c) for i, c in enumerate(sccs) if layer[i] == n)
        print(f"  {n}: {', '.join(names)}")
    sys.exit(1 if cycles else 0)


if __name__ == "__main__":
    main()
