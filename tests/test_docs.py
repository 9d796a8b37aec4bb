"""The documentation site builds without a warning, and the README's links land on its pages."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_the_documentation_site_builds_strictly_with_every_page_in_its_navigation(tmp_path):
    """`mkdocs build --strict` fails on a broken link, a missing anchor or a page left out of the navigation."""
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(tmp_path / "site")], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    cli = (tmp_path / "site" / "cli" / "index.html").read_text()
    assert "--checkpoint-weights" in cli and "--merge" in cli  # the reference came from the parser


def test_the_readme_is_short_and_its_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 120
    links = re.findall(r"\]\(([^)#]+)", text)
    assert links and all((ROOT / link).exists() for link in links if not link.startswith("http")), links
