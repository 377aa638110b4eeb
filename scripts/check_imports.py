#!/usr/bin/env python3
"""Checks that the library's stages import one another without circles.

Reads every `crate::<stage>` path in src/<stage>/ (and src/<stage>.rs), builds the graph of
stages, prints it, and exits 1 naming the files of any circle. Usage: scripts/check_imports.py
"""
import pathlib
import re
import sys

src = pathlib.Path(__file__).resolve().parent.parent / "src"
stages = sorted(p.stem for p in src.iterdir() if p.name not in ("lib.rs", "bin") and (p.is_dir() or p.suffix == ".rs"))
edges = {s: {} for s in stages}
for s in stages:
    files = list((src / s).rglob("*.rs")) if (src / s).is_dir() else [src / f"{s}.rs"]
    for f in files:
        text = f.read_text()
        # Drop comments and test modules' files: only the library's own imports count.
        if f.name == "tests.rs":
            continue
        cut = re.search(r"#\[cfg\(test\)\]\s*(pub(\(crate\))? )?mod tests \{", text)
        if cut:
            text = text[: cut.start()]
        text = re.sub(r"//.*", "", text)
        for m in re.finditer(r"\bcrate::([a-z_]+)", text):
            t = m.group(1)
            if t != s and t in edges:
                edges[s].setdefault(t, set()).add(str(f.relative_to(src.parent)))

def cycle_from(start):
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for nxt in edges[node]:
            if nxt == start:
                return path + [start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, path + [nxt]))
    return None

for s in stages:
    print(f"{s:9} -> {', '.join(sorted(edges[s])) or '-'}")
bad = False
for s in stages:
    c = cycle_from(s)
    if c and c[0] == min(c[:-1]):
        bad = True
        print("circle: " + " -> ".join(c))
        for a, b in zip(c, c[1:]):
            print(f"  {a} -> {b}: {', '.join(sorted(edges[a][b]))}")
sys.exit(1 if bad else 0)
