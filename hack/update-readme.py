"""Rewrite the generated API reference in README.md (`make docs`)."""

from __future__ import annotations

import re
from pathlib import Path

from dbmigrate.api.reference import render_reference

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- api-reference:begin -->", "<!-- api-reference:end -->"


def updated(text: str) -> str:
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    return pattern.sub(lambda _m: f"{BEGIN}\n{render_reference()}{END}", text)


if __name__ == "__main__":
    README.write_text(updated(README.read_text()))
