"""The policy and list commands as an IT technician runs them: the real `esafety` console script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ESAFETY = Path(sys.executable).with_name("esafety")
LESSON = "2026-11-18T10:00"  # a Wednesday, in lessons (Europe/London)
LUNCH = "2026-11-18T12:45"


def esafety(home: Path, *args: str, policy: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ESAFETY_HOME": str(home), "ESAFETY_DATABASE_URL": f"sqlite:///{home}/esafety.db"}
    if policy:
        env["ESAFETY_POLICY"] = str(policy)
    return subprocess.run([str(ESAFETY), *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


def test_policy_check_passes_the_shipped_policy(home: Path):
    r = esafety(home, "policy", "check", str(ROOT / "policies" / "aup.yaml"))
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout


def test_policy_check_lists_every_error_with_file_and_line(home: Path, tmp_path: Path):
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    broken = tmp_path / "policies" / "aup.yaml"
    text = broken.read_text()
    text = text.replace("categories: [gambling, phishing]", "categories: [gambling, casinos]")
    text = text.replace('times: ["08:45-12:30"', 'times: ["25:00-12:30"')
    broken.write_text(text)
    lines = text.splitlines()
    cat_line = next(i for i, ln in enumerate(lines, 1) if "casinos" in ln)
    time_line = next(i for i, ln in enumerate(lines, 1) if "25:00-12:30" in ln)

    r = esafety(home, "policy", "check", str(broken))
    assert r.returncode == 1
    assert f"{broken}:{cat_line}: unknown category 'casinos'" in r.stderr
    assert f"{broken}:{time_line}: bad time range '25:00-12:30'" in r.stderr
    assert "2 error(s)" in r.stderr


def test_explain_prints_the_rule_and_clause_and_exits_3_on_block(home: Path):
    r = esafety(home, "policy", "explain", "https://www.instagram.com/", "--group", "year12", "--at", LESSON)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "decision: block" in r.stdout
    assert "rule:     pupils-social-lessons" in r.stdout
    assert "clause:   A7 Games, social networking and chat are only for the times the school allows" in r.stdout

    r = esafety(home, "policy", "explain", "https://www.instagram.com/", "--group", "year12", "--at", LUNCH)
    assert r.returncode == 0
    assert "decision: allow" in r.stdout


def test_explain_uses_the_users_group_from_the_store(home: Path):
    assert esafety(home, "db", "upgrade").returncode == 0
    added = esafety(home, "users", "add", "jsmith", "--group", "year8", "--no-password")
    assert added.returncode == 0, added.stderr
    r = esafety(home, "policy", "explain", "www.tiktok.com", "--user", "jsmith", "--at", LUNCH)
    assert r.returncode == 3
    assert "user:     jsmith (group year8)" in r.stdout and "rule:     younger-social" in r.stdout


def test_explain_shows_safe_search_and_safeguarding_flags(home: Path):
    r = esafety(home, "policy", "explain", "https://www.google.com/search?q=how+to+self+harm", "--group", "year9")
    assert r.returncode == 0
    assert "decision: flag" in r.stdout
    assert "flag:     self_harm level 4 (search-term)" in r.stdout
    assert "rewrite:  safe=active" in r.stdout


def test_explain_refuses_an_unknown_group(home: Path):
    r = esafety(home, "policy", "explain", "https://example.org/", "--group", "year14")
    assert r.returncode == 2 and "unknown group 'year14'" in r.stderr


def test_lists_import_then_the_policy_blocks_the_imported_domains(home: Path, tmp_path: Path):
    hosts = tmp_path / "gambling.hosts"
    hosts.write_text("# a hosts-format list\n" + "".join(f"0.0.0.0 bet{i}.example\n" for i in range(20_000))
                     + "0.0.0.0 localhost\n10.0.0.1 intranet.example\n")
    r = esafety(home, "lists", "import", "--category", "gambling", "--format", "hosts", str(hosts))
    assert r.returncode == 0, r.stderr
    assert "imported 20000 domains and 0 URLs into 'gambling' (1 lines rejected)" in r.stdout
    assert "importing gambling.hosts" in r.stderr and "100%" in r.stderr  # the progress bar ran to the end

    r = esafety(home, "policy", "explain", "https://www.bet1234.example/", "--group", "year10")
    assert r.returncode == 3 and "category: gambling" in r.stdout

    stats = esafety(home, "lists", "stats")
    assert stats.returncode == 0
    row = next(ln for ln in stats.stdout.splitlines() if ln.startswith("gambling "))
    assert int(row.split()[1]) >= 20_000


def test_lists_import_refuses_bad_input_without_writing(home: Path, tmp_path: Path):
    r = esafety(home, "lists", "import", "--category", "casinos", "--format", "plain", str(tmp_path))
    assert r.returncode == 2 and "unknown category 'casinos'" in r.stderr
    r = esafety(home, "lists", "import", "--category", "gambling", "--format", "plain", str(tmp_path / "none.txt"))
    assert r.returncode == 2 and "no such file" in r.stderr
    r = esafety(home, "lists", "import", "--category", "gambling", "--format", "ut1", str(tmp_path / "x"))
    assert r.returncode == 2
    assert not (home / "lists" / "gambling").exists() or not any((home / "lists" / "gambling").iterdir())


def test_a_store_without_its_schema_gets_a_clear_error_not_a_traceback(home: Path):
    r = esafety(home, "audit", "verify")
    assert r.returncode == 2
    assert "no such table" in r.stderr and "run `esafety db upgrade`" in r.stderr
    assert "Traceback" not in r.stderr
