#!/usr/bin/env python3
"""Checks the book (docs/src) against the repository and the binary.

    check.py --gatehouse BIN [DOCS_SRC]

- Links: every relative link resolves (a chapter, or a file or folder of the
  repository), and every `#anchor` names a heading of its target chapter (the
  ids mdBook gives headings). External links are not fetched (no network here).
- Chapters: every chapter is in SUMMARY.md, and SUMMARY.md names no missing one.
- TOML blocks: each parses; a block with a gateway section goes through
  `gatehouse config check --skip-files`, a complete policy (`version` and
  `[[rules]]`) through `gatehouse policy check`; a block whose first line is
  `# excerpt ...` is only parsed.
- Shell blocks: every `gatehouse ...` command names subcommands and long
  options the binary has (`gatehouse SUB --help`).
Exits 1 on any problem, naming file and line.
"""

import argparse
import pathlib
import re
import shlex
import subprocess
import sys
import tempfile
import tomllib

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^```(\w*)")
GATEWAY_SECTIONS = {"ingress", "evidence", "roles", "issuers", "decider", "nats", "archiver", "approvals", "admin", "log", "masking"}


def anchor(text):
    """mdBook's heading id: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"[`*_]", "", text)
    text = text.lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def blocks(lines):
    """(language, first line number, text) of each fenced block."""
    out, lang, start, buf = [], None, 0, []
    for n, line in enumerate(lines, 1):
        m = FENCE.match(line)
        if m and lang is None:
            lang, start, buf = m.group(1) or "text", n + 1, []
        elif line.startswith("```") and lang is not None:
            out.append((lang, start, "\n".join(buf) + "\n"))
            lang = None
        elif lang is not None:
            buf.append(line)
    return out


def help_text(gatehouse, path, cache):
    key = tuple(path)
    if key not in cache:
        run = subprocess.run([gatehouse, *path, "--help"], capture_output=True, text=True)
        cache[key] = run.stdout if run.returncode == 0 else None
    return cache[key]


def check_command(gatehouse, words, cache):
    """Problems with one `gatehouse ...` command line."""
    path = []
    for w in words[1:]:
        if w.startswith("-") or w.startswith("$") or w.isupper():
            break
        text = help_text(gatehouse, path, cache)
        subs = re.findall(r"^  ([a-z][a-z-]*)\s", text.split("Commands:")[1], re.M) if text and "Commands:" in text else []
        if not subs:
            break
        if w not in subs:
            return [f"`gatehouse {' '.join(path + [w])}`: no such subcommand ({', '.join(subs)})"]
        path.append(w)
    text = help_text(gatehouse, path, cache)
    if text is None:
        return [f"`gatehouse {' '.join(path)} --help` failed"]
    return [
        f"`gatehouse {' '.join(path)}`: no option {w.split('=')[0]}"
        for w in words
        if w.startswith("--") and w.split("=")[0] not in text
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gatehouse", required=True)
    ap.add_argument("src", nargs="?", default=str(pathlib.Path(__file__).resolve().parents[2] / "docs" / "src"))
    a = ap.parse_args()
    src = pathlib.Path(a.src).resolve()
    repo = src.parents[1]
    chapters = {p: p.read_text().splitlines() for p in sorted(src.glob("*.md"))}
    anchors = {p: {anchor(m.group(2)) for l in ls if (m := HEADING.match(l))} for p, ls in chapters.items()}
    problems, cache = [], {}
    summary = set(re.findall(r"\]\(([^)]+\.md)\)", (src / "SUMMARY.md").read_text()))
    for p in chapters:
        if p.name != "SUMMARY.md" and p.name not in summary:
            problems.append(f"{p.name}: not in SUMMARY.md")
    for s in summary:
        if not (src / s).is_file():
            problems.append(f"SUMMARY.md: {s} does not exist")
    for p, lines in chapters.items():
        in_block = False
        for n, line in enumerate(lines, 1):
            if line.startswith("```"):
                in_block = not in_block
            if in_block:
                continue
            for target in LINK.findall(line):
                if re.match(r"^[a-z]+:", target):
                    continue
                file, _, frag = target.partition("#")
                dest = (p.parent / file).resolve() if file else p
                if not dest.exists():
                    problems.append(f"{p.name}:{n}: {target}: no such file")
                elif frag and dest.suffix == ".md" and dest in anchors and frag not in anchors[dest]:
                    problems.append(f"{p.name}:{n}: {target}: no heading #{frag}")
                elif file and dest.is_relative_to(repo) is False:
                    problems.append(f"{p.name}:{n}: {target}: outside the repository")
        for lang, start, text in blocks(lines):
            where = f"{p.name}:{start}"
            if lang == "toml":
                try:
                    doc = tomllib.loads(text)
                except tomllib.TOMLDecodeError as e:
                    problems.append(f"{where}: TOML: {e}")
                    continue
                if text.startswith("# excerpt"):
                    continue
                with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
                    f.write(text)
                    f.flush()
                    if "version" in doc and "rules" in doc:
                        cmd = [a.gatehouse, "policy", "check", f.name]
                    elif GATEWAY_SECTIONS & doc.keys() and not doc.keys() - GATEWAY_SECTIONS:
                        cmd = [a.gatehouse, "config", "check", "--skip-files", f.name]
                    else:
                        continue
                    run = subprocess.run(cmd, capture_output=True, text=True)
                    if run.returncode != 0:
                        problems.append(f"{where}: {' '.join(cmd[1:3])}:\n{run.stderr}")
            elif lang in ("sh", "bash", "console", "shell"):
                joined = re.sub(r"\\\n\s*", " ", text)
                for line in joined.splitlines():
                    line = line.split(" #")[0].strip().lstrip("$ ")
                    for part in re.split(r"\s*(?:&&|\|\||;|\|)\s*", line):
                        try:
                            words = shlex.split(part)
                        except ValueError:
                            continue
                        words = [w for w in words if "=" not in w or w.startswith("-")] if words and "=" in words[0] and not words[0].startswith("-") else words
                        if words and pathlib.Path(words[0]).name == "gatehouse":
                            problems += [f"{where}: {e}" for e in check_command(a.gatehouse, words, cache)]
    for pr in problems:
        print(pr, file=sys.stderr)
    print(f"{len(chapters)} chapters: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
