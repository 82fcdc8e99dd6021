#!/usr/bin/env python3
"""Markdown values table of charts/restrictor from the `# --` comments in values.yaml.

  values_table.py VALUES.yaml            print the table
  values_table.py VALUES.yaml README.md  exit 1 if README.md's table (between the
                                         <!-- values-table --> markers) is not the current one,
                                         or if a value has no `# --` comment (itself or a parent)
  values_table.py VALUES.yaml README.md --write   rewrite README.md's table
"""
import json
import re
import sys

import yaml

BEGIN, END = "<!-- values-table:begin -->", "<!-- values-table:end -->"


def documented_keys(path):
    """[(dotted key, description)] for every key preceded by a `# --` comment block."""
    rows, stack, comment = [], [], None
    for raw in open(path):
        line = raw.rstrip("\n")
        stripped = line.strip()
        if not stripped:
            comment = None
            continue
        if stripped.startswith("# --"):
            comment = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if comment is not None:
                comment.append(stripped[1:].strip())
            continue
        m = re.match(r"^(\s*)([A-Za-z0-9_.-]+):", line)
        if not m:
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m.group(2)))
        key = ".".join(k for _, k in stack)
        if comment is not None:
            rows.append((key, " ".join(c for c in comment if c)))
        comment = None
    return rows


def lookup(values, dotted):
    v = values
    for part in dotted.split("."):
        v = v[part]
    return v


def leaves(values, prefix=""):
    if isinstance(values, dict) and values:
        for k, v in values.items():
            yield from leaves(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1]


def table(values_path):
    values = yaml.safe_load(open(values_path))
    rows = documented_keys(values_path)
    documented = {k for k, _ in rows}
    missing = [leaf for leaf in leaves(values)
               if not any(leaf == d or leaf.startswith(d + ".") for d in documented)]
    out = ["| key | default | description |", "|---|---|---|"]
    for key, desc in rows:
        default = json.dumps(lookup(values, key), ensure_ascii=False)
        desc = desc.replace("|", "\\|")
        out.append(f"| `{key}` | `{default}` | {desc} |")
    return "\n".join(out) + "\n", missing


def main():
    text, missing = table(sys.argv[1])
    if missing:
        print("values without a `# --` comment: " + ", ".join(missing), file=sys.stderr)
    if len(sys.argv) == 2:
        sys.stdout.write(text)
        return 1 if missing else 0
    readme = open(sys.argv[2]).read()
    start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    current = readme[start:end].strip("\n") + "\n"
    if "--write" in sys.argv:
        open(sys.argv[2], "w").write(readme[:start] + "\n" + text + readme[end:])
        return 1 if missing else 0
    if current != text:
        print(f"{sys.argv[2]}: values table is stale; run: {sys.argv[0]} {sys.argv[1]} {sys.argv[2]} --write",
              file=sys.stderr)
        return 1
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
