"""docs/security.md lists every attack the tests try: a marked test missing from its table fails here.

Like tests/test_contracts.py for the contracts: run `make security-doc` after adding or changing an
`@pytest.mark.attack(...)` test (it runs them and rewrites the table with their results).
"""

from __future__ import annotations

from pathlib import Path

from hub_devstack.security_report import BEGIN, DOC, END, Attack, attacks_in, declared_attacks, merge, rewrite, table_rows


def test_every_attack_marked_test_is_in_the_table_of_docs_security_md() -> None:
    declared = {a.test: a for a in declared_attacks()}
    rows = {r.test: r for r in table_rows(DOC.read_text(encoding="utf-8"))}
    missing = sorted(set(declared) - set(rows))
    stale = sorted(set(rows) - set(declared))
    changed = sorted(t for t in set(declared) & set(rows)
                     if (declared[t].description, declared[t].outcome) != (rows[t].description, rows[t].outcome))
    assert declared, "no attack-marked test found: is the scan broken?"
    assert not missing, f"attack tests missing from docs/security.md, run `make security-doc`: {missing}"
    assert not stale, f"docs/security.md lists tests that no longer exist, run `make security-doc`: {stale}"
    assert not changed, f"descriptions changed since the table was made, run `make security-doc`: {changed}"


def test_the_scan_finds_markers_on_functions_methods_and_modules(tmp_path: Path) -> None:
    source = tmp_path / "test_sample.py"
    source.write_text(
        "import pytest\nfrom pytest import mark\n"
        "@pytest.mark.attack('send junk', outcome='dead letter')\nasync def test_junk(): ...\n"
        "def test_plain(): ...\n"
        "class TestBroker:\n    @mark.attack(description='write a foreign topic', outcome='denied')\n"
        "    @pytest.mark.parametrize('x', [1, 2])\n    def test_write(self, x): ...\n")
    found = attacks_in(source, "t/test_sample.py")
    assert [(a.test, a.description, a.outcome) for a in found] == [
        ("t/test_sample.py::test_junk", "send junk", "dead letter"),
        ("t/test_sample.py::TestBroker::test_write", "write a foreign topic", "denied"),
    ]
    module = tmp_path / "test_module.py"
    module.write_text("import pytest\npytestmark = [pytest.mark.integration, pytest.mark.attack('a', outcome='b')]\n"
                      "def test_one(): ...\n")
    assert [a.test for a in attacks_in(module, "m.py")] == ["m.py::test_one"]


def test_the_table_is_rewritten_between_the_markers_and_reads_back() -> None:
    doc = f"# head\n\n{BEGIN}\nold table\n{END}\ntail\n"
    attacks = merge([Attack("t.py::test_a", "pipe | in text", "refused"), Attack("t.py::test_b", "b", "c")],
                    [Attack("t.py::test_a", "pipe | in text", "refused", "passed")])
    out = rewrite(doc, attacks)
    assert out.startswith("# head\n\n") and out.endswith(f"{END}\ntail\n") and "old table" not in out
    assert [(r.test, r.description, r.result) for r in table_rows(out)] == [
        ("t.py::test_a", "pipe | in text", "passed"), ("t.py::test_b", "b", "not run")]
    assert rewrite(out, attacks) == out
