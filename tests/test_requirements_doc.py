"""docs/requirements.md: every requirement id links an end-to-end test that exists and names that id."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "requirements.md"
ITEM = re.compile(r"^- \*\*(S\d+) — .*?(?=^- \*\*|^## |\Z)", re.M | re.S)
LINK = re.compile(r"\]\((\.\./tests/e2e/[^)#]+\.py)\)")


def mentions(text: str, sid: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9]){sid}(?![0-9])", text) is not None


def requirements() -> dict[str, list[str]]:
    return {m.group(1): LINK.findall(m.group(0)) for m in ITEM.finditer(DOC.read_text(encoding="utf-8"))}


def test_every_requirement_links_an_existing_test_that_names_it() -> None:
    found = requirements()
    assert found, "no requirement items found in docs/requirements.md"
    for sid, links in found.items():
        assert links, f"{sid} links no test"
        for link in links:
            test = (DOC.parent / link).resolve()
            assert test.is_file(), f"{sid} links {link}, which does not exist"
            assert mentions(test.read_text(encoding="utf-8"), sid), f"{link} does not mention {sid}"


def test_every_id_of_the_e2e_suite_is_a_requirement_and_none_is_listed_twice() -> None:
    text = DOC.read_text(encoding="utf-8")
    listed = [m.group(1) for m in ITEM.finditer(text)]
    assert len(listed) == len(set(listed)), sorted(listed)
    named_by_tests = {sid for path in (ROOT / "tests" / "e2e").glob("test_S*.py")
                      for sid in re.findall(r"S\d+", path.stem)}
    assert named_by_tests <= set(listed), named_by_tests - set(listed)


def test_the_readme_points_at_the_requirements_inside_the_repository() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "](docs/requirements.md)" in readme
    assert "../shared/SPEC.md" not in readme
