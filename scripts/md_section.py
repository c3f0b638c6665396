"""Puts a `## ` section into a Markdown file, replacing the one with the same heading.

    python3 scripts/md_section.py BENCHMARKS.md < section.md

stdin is the section, heading line first (`## Title`). If FILE has a section with that exact
heading, it is replaced where it stands (up to the next `## ` heading outside a code fence, or
the end), so a rerun of a benchmark script rewrites its own table and nothing else; otherwise
the section is appended. Scripts that measure one thing use this instead of appending, so
BENCHMARKS.md keeps one table per measurement.
"""

import sys


def split_sections(lines):
    """Yields (heading or None, lines) for the preamble and each `## ` section."""
    heading, body, fenced = None, [], False
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("## "):
            yield heading, body
            heading, body = line.rstrip("\n"), []
        body.append(line)
    yield heading, body


def main():
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} FILE < section.md")
    path = sys.argv[1]
    section = sys.stdin.read().strip("\n") + "\n"
    heading = section.split("\n", 1)[0]
    if not heading.startswith("## "):
        sys.exit("md_section.py: the section must start with a `## ` heading")
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except FileNotFoundError:
        lines = []
    out, replaced = [], False
    for name, body in split_sections(lines):
        if name == heading and not replaced:
            out.append(section + "\n")
            replaced = True
        else:
            out.extend(body)
    if not replaced:
        text = "".join(out).rstrip("\n")
        out = [text + "\n\n" if text else "", section]
    text = "".join(out).rstrip("\n") + "\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
