"""The docs site (docs/, mkdocs.yml) builds from the repository as it is, with no network.

`mkdocs build --strict` turns MkDocs' warnings into errors: a link to a page or an anchor that
does not exist, a page missing from the nav, a nav entry without its page. The README's links
into docs/ and its pictures are checked here too, as MkDocs does not read the README.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.deploy import ROOT


@pytest.fixture(scope="module")
def strict_build(tmp_path_factory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One `mkdocs build --strict` for the module: what it said, and where the site went."""
    site = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # the theme's notice about its future
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    return done, site


def test_the_docs_site_builds_strictly_with_no_broken_link(strict_build):
    done, site = strict_build
    assert done.returncode == 0, done.stderr[-4000:]
    assert (site / "index.html").exists() and (site / "architecture" / "index.html").exists()


def test_every_file_the_readme_links_to_or_shows_is_in_the_repository():
    readme = (ROOT / "README.md").read_text()
    targets = {
        target.split("#", 1)[0]
        for target in re.findall(r"\]\(([^)\s]+)\)", readme)
        if not re.match(r"[a-z]+://", target) and not target.startswith("#")
    }
    assert any(t.startswith("docs/images/") for t in targets)
    missing = sorted(t for t in targets if t and not (ROOT / t).exists())
    assert not missing, f"README links to files that are not there: {missing}"


def test_the_built_site_fetches_nothing_from_another_host(strict_build):
    """A county's intranet has no internet: no web font, script or stylesheet from a CDN."""
    done, site = strict_build
    assert done.returncode == 0, done.stderr[-4000:]
    remote = re.compile(r"""<(?:link|script|img)\b[^>]*\b(?:href|src)=["']?(?:https?:)?//""")
    fetching = sorted(
        str(page.relative_to(site))
        for page in site.rglob("*.html")
        if remote.search(page.read_text())
    )
    assert not fetching, f"pages that load from another host: {fetching}"
