"""The compiled domain index: its C table and the pure-Python reference give the same answers."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from esafety.policy.domainindex import ADDRESS_LIKE, NON_ASCII, DomainIndex, NativeTable, PyTable, siphash13

TABLES = pytest.mark.parametrize("table", [NativeTable, PyTable], ids=["C", "Python"])


def test_the_c_table_is_built_by_the_install():
    # Without it the proxy still filters, several times slower: a broken build must not pass unseen.
    assert NativeTable is not None, "esafety/policy/_hostindex.c was not compiled (pip install -e . with gcc)"


def test_siphash13_is_the_one_cpython_hashes_bytes_with():
    samples = [b"a", b"example.com", b"0123456789abcdef", b"x" * 37, bytes(range(200))]
    # With PYTHONHASHSEED=0 CPython keys its SipHash-1-3 with zeros: an independent reference.
    out = subprocess.run([sys.executable, "-c", f"print([hash(b) % 2**64 for b in {samples!r}])"],
                         env={**os.environ, "PYTHONHASHSEED": "0"}, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str([siphash13(0, 0, b) for b in samples])
    from esafety.policy import _hostindex

    rng = random.Random(7)
    for _ in range(3000):
        k0, k1, data = rng.getrandbits(64), rng.getrandbits(64), rng.randbytes(rng.randrange(0, 70))
        assert _hostindex.siphash13(k0, k1, data) == siphash13(k0, k1, data)


@TABLES
def test_parents_match_and_the_index_survives_save_and_load(tmp_path: Path, table):
    built = DomainIndex.build([(["example.com"], 1), (["ads.example.com"], 2), (["example.org"], 4), (["com"], 8)],
                              count=4, table=table)
    path = tmp_path / "idx"
    built.save(path)
    for index in (built, DomainIndex.load(path, table=table)):
        assert index.lookup("example.com") == 1 | 8
        assert index.lookup("x.ads.example.com") == 1 | 2 | 8
        assert index.lookup("example.org") == 4
        assert index.lookup("notexample.org") == 0
        assert index.lookup("org") == 0
        assert len(index) == 4


@TABLES
def test_a_domain_in_two_lists_has_both_bits_and_the_table_scales(table):
    domains = [f"site{i}.example" for i in range(20_000)]
    index = DomainIndex.build([(domains, 1), (["site7.example"], 2)], count=len(domains) + 1, table=table)
    assert len(index) == len(domains)
    assert index.lookup("www.site7.example") == 3
    assert all(index.lookup(d) == 1 for d in domains[:100] if d != "site7.example")
    assert index.lookup("site20000.example") == 0


@TABLES
def test_classify_normalises_and_leaves_idna_and_addresses_to_python(table):
    index = DomainIndex.build([(["bad.example"], 1)], count=1, table=table)
    assert index.classify("WWW.Bad.Example..") == ("www.bad.example", 1)
    assert index.classify("good.example") == ("good.example", 0)
    assert index.classify("Bücher.example")[1] == NON_ASCII
    for address in ("10.0.0.1", "[::1]", "0X7F.1", "2130706433", "bad.example:8080"):
        assert index.classify(address) == (address.lower(), ADDRESS_LIKE)
    assert index.classify("...") == ("", 0)


@TABLES
def test_a_table_refuses_more_than_its_count_and_a_loaded_one_is_read_only(tmp_path: Path, table):
    with pytest.raises(ValueError, match="more items than the count"):
        DomainIndex.build([([f"d{i}.example" for i in range(40)], 1)], count=3, table=table)
    path = tmp_path / "idx"
    DomainIndex.build([(["a.example"], 1)], count=1, table=table).save(path)
    with pytest.raises(TypeError):
        DomainIndex.load(path, table=table).table.insert(["b.example"], 1)


def test_c_and_python_agree_on_hostile_hosts_and_read_each_others_files(tmp_path: Path):
    rng = random.Random(11)
    listed = [f"{rng.choice(['', 'www.', 'a.b.'])}n{i}.example" for i in range(2000)] + ["intranet"]
    lists = [(listed[i::3], 1 << i) for i in range(3)]
    c = DomainIndex.build(lists, count=len(listed), table=NativeTable)
    c.save(tmp_path / "c.idx")
    py = DomainIndex.load(tmp_path / "c.idx", table=PyTable)
    hosts = listed + [h.upper() + "." for h in listed[:200]] + [f"x.{h}" for h in listed[:200]] + [
        "", ".", "..", "a..b", "intranet", "INTRANET.", "x.intranet", "a" * 5000 + ".n1.example", "\x00n1.example",
        "n1.example\x00", "0x7f.0.0.1", "1.2.3.4", "::ffff:1.2.3.4", "ex ample.com", "münchen.de", "n1.example:80",
        "\udcff.n1.example", "x.\ud800",
        "".join(rng.choice("abc.-0Xx:") for _ in range(40)),
    ] + ["".join(rng.choice("ab.xX0:-") for _ in range(rng.randrange(12))) for _ in range(2000)]
    for h in hosts:
        assert c.classify(h) == py.classify(h), h
        assert c.lookup(h.lower()) == py.lookup(h.lower()), h
    # And the other way round: a file the Python table wrote, read by the C one.
    py2 = DomainIndex.build(lists, count=len(listed), table=PyTable)
    py2.save(tmp_path / "py.idx")
    c2 = DomainIndex.load(tmp_path / "py.idx", table=NativeTable)
    assert all(c2.lookup(h) == py2.lookup(h) for h in hosts if h.isascii())


def test_each_compile_has_its_own_hash_key(tmp_path: Path):
    # A pupil who knows the list still cannot pick a name whose hash lands on an allow-listed slot.
    a = DomainIndex.build([(["school.example"], 1)], count=1)
    b = DomainIndex.build([(["school.example"], 1)], count=1)
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    assert (tmp_path / "a").read_bytes()[32:48] != (tmp_path / "b").read_bytes()[32:48]
    assert a.lookup("www.school.example") == b.lookup("www.school.example") == 1


def test_a_corrupt_index_file_is_refused(tmp_path: Path):
    for text in ("not an index at all, just text" * 10, "ESDX"):
        bad = tmp_path / "broken.idx"
        bad.write_text(text)
        with pytest.raises(ValueError, match="not a compiled"):
            DomainIndex.load(bad)


def test_without_the_c_table_the_engine_still_filters_and_says_so(tmp_path: Path):
    # As on a machine where pip found no compiler: the import of the C module fails.
    code = f"""
import sys
from pathlib import Path
sys.modules["esafety.policy._hostindex"] = None
from esafety.identity import Identity
from esafety.policy.engine import Engine
from esafety.policy.loader import load_policy
from esafety.policy.model import Request
engine = Engine.build(load_policy({str(Path(__file__).resolve().parents[2] / "policies" / "aup.yaml")!r}),
                      None, Path({str(tmp_path)!r}))
print(type(engine.index.table).__name__)
for host in ("WWW.PornHub.com.", "www.bbc.co.uk", "10.1.2.3"):
    print(engine.decide(Request("GET", "https", host, 443, "/"), Identity("amy", "year9")).action.value)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["PyTable", "block", "allow", "block"]
    assert "the C domain index" in out.stderr and "not built" in out.stderr
