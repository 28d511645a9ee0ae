"""The documentation site builds cleanly and the README stays a guide.

`mkdocs build --strict` turns every warning into an error: a broken internal link or anchor,
a page missing from the nav, a nav entry without a file. Each nav page must come out as HTML.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250


def nav_pages(nav: list) -> list[str]:
    """Markdown paths named in mkdocs.yml's nav, at any depth."""
    pages = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        if isinstance(value, list):
            pages.extend(nav_pages(value))
        elif isinstance(value, str) and value.endswith(".md"):
            pages.append(value)
    return pages


def test_readme_is_a_guide_of_at_most_250_lines():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move reference material to docs/"


def test_mkdocs_strict_build_renders_every_nav_page(tmp_path):
    mkdocs = Path(sys.executable).with_name("mkdocs")
    if not mkdocs.exists():
        pytest.fail(f"{mkdocs} not found; install the docs extra: pip install -e '.[docs]'")
    site = tmp_path / "site"
    result = subprocess.run(
        [str(mkdocs), "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    # mkdocs.yml uses plain YAML (no !!python tags), so safe_load reads it.
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    pages = nav_pages(config["nav"])
    assert pages, "mkdocs.yml has no nav pages"
    for page in pages:
        assert (ROOT / "docs" / page).is_file(), f"nav names docs/{page}, which does not exist"
        html = site / ("index.html" if page == "index.md" else f"{page[:-3]}/index.html")
        assert html.is_file(), f"docs/{page} did not build to {html.relative_to(site)}"
