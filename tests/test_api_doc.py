"""docs/api.md is the contract in the repository: it names every endpoint the service's own
OpenAPI document has (the Mastodon client API's in docs/mastodon.md), and no link in the README
or docs/ leads outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

from app.api.openapi import build_openapi

ROOT = Path(__file__).resolve().parent.parent
API_DOC = ROOT / "docs" / "api.md"
MASTODON_DOC = ROOT / "docs" / "mastodon.md"
MASTODON_PREFIXES = ("/api/", "/oauth/")
# Markdown links and images: [text](target) and ![alt](target).
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_every_openapi_operation_is_in_docs_api_md() -> None:
    doc = API_DOC.read_text()
    mastodon = MASTODON_DOC.read_text()
    operations = [
        (path, f"`{method.upper()} {path}`")
        for path, item in build_openapi()["paths"].items()
        for method in item
    ]
    assert len(operations) >= 15  # the document really was read
    missing = [
        op for path, op in operations if op not in doc and not path.startswith(MASTODON_PREFIXES)
    ]
    assert not missing, f"docs/api.md does not describe {missing}"
    missing = [
        op for path, op in operations if op not in mastodon and path.startswith(MASTODON_PREFIXES)
    ]
    assert not missing, f"docs/mastodon.md does not describe {missing}"


def test_no_link_in_the_docs_leaves_the_repository() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    checked = 0
    for page in pages:
        for target in LINK.findall(page.read_text()):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue  # a web address or an anchor on the same page
            path = (page.parent / target.split("#")[0]).resolve()
            assert path.is_relative_to(ROOT), f"{page.name}: {target} is outside the repository"
            assert path.exists(), f"{page.name}: {target} does not exist"
            checked += 1
    assert checked > 0
    readme = (ROOT / "README.md").read_text()
    assert "](docs/api.md)" in readme
