#!/usr/bin/env python3
"""Prints NEW followed by the `## ` sections of OLD whose headings NEW lacks.

scripts/bench.sh rewrites BENCHMARKS.md from its own results; the other bench scripts
(presence, fan-out, SDK size, IndexedDB, A/B) each append or replace their own section.
This keeps theirs when the main comparison is rerun.

Usage: keep_sections.py OLD NEW
"""
import sys


def sections(text):
    """(heading, body) for each `## ` section, in order; fenced code is not searched."""
    out, heading, lines, fenced = [], None, [], False
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("## "):
            if heading is not None:
                out.append((heading, "".join(lines)))
            heading, lines = line.strip(), [line]
        elif heading is not None:
            lines.append(line)
    if heading is not None:
        out.append((heading, "".join(lines)))
    return out


def main():
    old_path, new_path = sys.argv[1:3]
    old = open(old_path, encoding="utf-8").read()
    new = open(new_path, encoding="utf-8").read()
    have = {h for h, _ in sections(new)}
    kept = [body for h, body in sections(old) if h not in have]
    text = new.rstrip("\n") + "\n"
    for body in kept:
        text += "\n" + body.rstrip("\n") + "\n"
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
