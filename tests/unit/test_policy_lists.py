"""List formats and the compiled domain index."""

from __future__ import annotations

from pathlib import Path

import pytest

from esafety.policy.lists import normalise_domain, read_list


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_plain_list_skips_comments_and_counts_rejects(tmp_path: Path):
    p = write(tmp_path, "l.txt",
              "# comment\nExample.COM.\n*.wild.example\n\nnot a domain\nbad_-.\nxn--bcher-kva.example\n")
    got = read_list(p, "plain")
    assert got.domains == ["example.com", "wild.example", "xn--bcher-kva.example"]
    assert got.rejected == 2


def test_hosts_format_takes_sinkholed_names_only(tmp_path: Path):
    p = write(tmp_path, "hosts", "127.0.0.1 localhost\n0.0.0.0 ads.example tracker.example # two\n"
                                 "10.1.2.3 intranet.example\n::1 ip6-localhost\n")
    got = read_list(p, "hosts")
    assert got.domains == ["ads.example", "tracker.example"]
    assert got.rejected == 1  # a real mapping is not a block entry


def test_adblock_format_takes_whole_domain_rules_only(tmp_path: Path):
    p = write(tmp_path, "easylist.txt", "[Adblock Plus 2.0]\n! title\n||casino.example^\n||cdn.example^$third-party\n"
                                        "@@||allowed.example^\n||path.example/ads^\nexample.com##.banner\n")
    got = read_list(p, "adblock")
    assert got.domains == ["casino.example", "cdn.example"]
    assert got.rejected == 3


def test_url_lists_in_iwf_style_keep_paths_as_prefixes(tmp_path: Path):
    p = write(tmp_path, "iwf.urls", "http://bad.example/gallery/123\nhttps://Whole.Example/\nbad.example:8080/x\n"
                                    "ftp://\n")
    got = read_list(p, "urls")
    assert got.domains == ["whole.example"]
    assert got.urls == ["bad.example/gallery/123", "bad.example/x"]
    assert got.rejected == 1


def test_ut1_folder_has_domains_and_urls(tmp_path: Path):
    folder = tmp_path / "gambling"
    folder.mkdir()
    write(folder, "domains", "bet.example\ncasino.example\n")
    write(folder, "urls", "news.example/betting-tips\n")
    got = read_list(folder, "ut1")
    assert got.domains == ["bet.example", "casino.example"] and got.urls == ["news.example/betting-tips"]
    with pytest.raises(ValueError, match="category folder"):
        read_list(folder / "domains", "ut1")


def test_unknown_format_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="unknown list format"):
        read_list(write(tmp_path, "x", "a.example\n"), "csv")


@pytest.mark.parametrize(("raw", "want"), [
    ("Bücher.Example", "xn--bcher-kva.example"), ("  www.EXAMPLE.org. ", "www.example.org"),
    ("*.example.net", "example.net"), ("a" * 64 + ".example", None), ("http://x.example/", None), ("", None),
])
def test_normalise_domain(raw: str, want: str | None):
    assert normalise_domain(raw) == want
