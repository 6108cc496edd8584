#!/usr/bin/env python3
"""Lengths of the functions in src/ (from `fn` to its closing brace), longest first.

With --max N, exits 1 when any function is longer than N lines: a function that grows past a
screen or two is a step that wants splitting (the rule for src/)."""
import re, sys, pathlib
args = sys.argv[1:]
limit = None
if "--max" in args:
    i = args.index("--max")
    limit = int(args[i + 1])
    del args[i:i + 2]
src = pathlib.Path(args[0] if args else "src")
top = int(args[1]) if len(args) > 1 else 10
res = []
for f in sorted(src.rglob("*.rs")):
    lines = f.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"\s*(?:pub(?:\([a-z]+\))?\s+)?(?:const\s+)?(?:unsafe\s+)?(?:extern\s+\"C\"\s+)?fn\s+(\w+)", lines[i])
        if m:
            depth, started, j = 0, False, i
            while j < len(lines):
                s = re.sub(r'"(?:\\.|[^"\\])*"', '""', lines[j])
                s = re.sub(r"'(?:\\.|[^'\\])'", "''", s)
                s = s.split("//")[0]
                if not started and ";" in s and "{" not in s: break
                depth += s.count("{") - s.count("}")
                if "{" in s: started = True
                if started and depth <= 0: break
                j += 1
            if started: res.append((j - i + 1, f"{f.relative_to(src)}:{i+1}", m.group(1)))
        i += 1
res.sort(reverse=True)
for n, where, name in res[:top]:
    print(f"{n:4}  {name:32} {where}")
if limit is not None:
    over = [r for r in res if r[0] > limit]
    for n, where, name in over:
        print(f"error: {name} ({where}) is {n} lines, over {limit}", file=sys.stderr)
    sys.exit(1 if over else 0)
