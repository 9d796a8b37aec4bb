"""MkDocs hook: the command-line reference page is generated from the argument parser at build time, so that it
cannot drift from the code."""

from __future__ import annotations

import argparse
import os

MARKER = "<!-- the parser's help, generated at build time -->"


def cli_reference() -> str:
    from benchmark.cli import build_parser

    os.environ["COLUMNS"] = "110"  # argparse wraps help to the terminal; a fixed width gives the same page everywhere
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    parts = ["```text\n" + parser.format_help() + "```\n"]
    for name, sub in commands.choices.items():
        parts.append(f"\n## `{name}`\n\n```text\n{sub.format_help()}```\n")
    return "".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri == "cli.md":
        return markdown.replace(MARKER, cli_reference())
    return markdown
