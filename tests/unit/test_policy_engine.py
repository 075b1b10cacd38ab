"""The per-request decision on the shipped AUP: groups, rules, schedules, exceptions, derived categories."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest

from esafety.identity import Identity
from esafety.policy.engine import Engine
from esafety.policy.loader import load_policy
from esafety.policy.model import Request
from esafety.policy.schema import Action

ROOT = Path(__file__).resolve().parents[2]
LONDON = ZoneInfo("Europe/London")
# Wednesday 10:00 is in lessons; Wednesday 12:45 is lunch; Saturday is outside school.
LESSON = datetime(2026, 11, 18, 10, 0, tzinfo=LONDON).timestamp()
LUNCH = datetime(2026, 11, 18, 12, 45, tzinfo=LONDON).timestamp()
WEEKEND = datetime(2026, 11, 21, 10, 0, tzinfo=LONDON).timestamp()


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return Engine.build(load_policy(ROOT / "policies" / "aup.yaml"), None, tmp_path_factory.mktemp("cache"))


def ask(engine: Engine, url: str, group: str, at: float = LESSON, **extra: str):
    u = urlsplit(url)
    req = Request("GET", u.scheme, u.hostname or "", u.port or (443 if u.scheme == "https" else 80), u.path or "/",
                  u.query, **extra)
    return engine.decide(req, Identity("someone", group), at)


def test_harmful_content_is_blocked_for_pupils_with_its_rule_and_clause(engine: Engine):
    d = ask(engine, "https://www.pornhub.com/video", "year9")
    assert (d.action, d.category, d.rule, d.clause) == (Action.BLOCK, "pornography", "pupils-harmful", "A2")


def test_subdomains_inherit_the_category_but_lookalikes_do_not(engine: Engine):
    assert ask(engine, "https://cdn.eu.pornhub.com/", "year9").action is Action.BLOCK
    assert ask(engine, "https://notpornhub.com/", "year9").action is Action.ALLOW
    # A label of undecodable bytes (kept as lone surrogates) still has a listed parent.
    d = engine.decide(Request("GET", "https", "\udcff.pornhub.com", 443, "/"), Identity("amy", "year9"), LESSON)
    assert (d.action, d.category) == (Action.BLOCK, "pornography")


def test_unknown_clients_get_the_strictest_group_and_an_unknown_group_falls_back(engine: Engine):
    assert ask(engine, "https://www.roblox.com/", "unknown", WEEKEND).action is Action.BLOCK
    assert ask(engine, "https://www.roblox.com/", "no-such-group", WEEKEND).rule == "younger-social"


def test_social_media_by_key_stage_and_lesson_time(engine: Engine):
    # Year 8 (KS3): never; sixth form: only outside lessons; staff: always.
    assert ask(engine, "https://www.instagram.com/", "year8", LUNCH).rule == "younger-social"
    assert ask(engine, "https://www.instagram.com/", "year12", LESSON).rule == "pupils-social-lessons"
    assert ask(engine, "https://www.instagram.com/", "year12", LUNCH).action is Action.ALLOW
    assert ask(engine, "https://www.instagram.com/", "staff", LESSON).action is Action.ALLOW


def test_staff_get_a_warning_for_games_in_lessons_only(engine: Engine):
    d = ask(engine, "https://www.roblox.com/", "staff", LESSON)
    assert (d.action, d.rule, d.clause) == (Action.WARN, "staff-social-lessons", "A7")
    assert ask(engine, "https://www.roblox.com/", "staff", WEEKEND).action is Action.ALLOW


def test_staff_research_into_extremism_is_allowed_but_flagged(engine: Engine):
    d = ask(engine, "https://stormfront.org/", "staff")
    assert (d.action, d.rule, d.clause) == (Action.FLAG, "staff-research-flag", "A9")


def test_circumvention_is_blocked_for_everyone(engine: Engine):
    for group in ("staff", "year13", "guests", "unknown"):
        d = ask(engine, "https://www.nordvpn.com/download", group, WEEKEND)
        assert (d.action, d.rule, d.clause) == (Action.BLOCK, "circumvention", "A3"), group


def test_exception_names_the_group_that_owns_it(engine: Engine):
    d = ask(engine, "https://www.bbc.co.uk/news", "year7")
    assert d.action is Action.ALLOW and d.rule == "exception:pupils"
    assert ask(engine, "https://www.bbc.co.uk/", "staff").rule == "exception:staff"
    assert ask(engine, "https://en.wikipedia.org/", "staff").rule == "default"


def test_ip_literals_are_blocked_for_pupils_but_not_staff(engine: Engine):
    assert ask(engine, "http://203.0.113.9/", "year10").rule == "pupils-ip-literal"
    assert ask(engine, "http://[2001:db8::1]/", "year10").category == "ip_literal"
    assert ask(engine, "http://203.0.113.9/", "staff").action is Action.ALLOW


def test_doh_is_recognised_by_its_shape_on_an_unlisted_host(engine: Engine):
    d = ask(engine, "https://resolver.example.net/dns-query?dns=AAABAAAB", "staff")
    assert (d.action, d.category) == (Action.BLOCK, "doh")
    d = ask(engine, "https://resolver.example.net/q", "staff", accept="application/dns-json")
    assert d.category == "doh"


def test_web_proxy_urls_are_recognised_by_pattern(engine: Engine):
    d = ask(engine, "https://free-unblocker.example/browse.php?u=https%3A%2F%2Fwww.pornhub.com", "year9")
    assert (d.action, d.category, d.clause) == (Action.BLOCK, "web_proxies", "A3")
    # CGIProxy carries its target in the path, with no query at all.
    d = ask(engine, "http://unblock.example/cgi-bin/nph-proxy.cgi/000100A/http/www.pornhub.com/", "year9")
    assert (d.action, d.category) == (Action.BLOCK, "web_proxies")
    assert ask(engine, "https://www.bbc.co.uk/news/proxy-wars", "year9").action is Action.ALLOW


def test_safe_search_is_forced_and_watch_terms_flag(engine: Engine):
    d = ask(engine, "https://www.google.com/search?q=maths+homework", "year9")
    assert d.action is Action.REWRITE and ("safe", "active") in d.rewrite.params
    d = ask(engine, "https://www.google.co.uk/search?q=how+to+self+harm", "year9")
    assert d.action is Action.FLAG and d.rewrite is not None
    assert [(f.category, f.level, f.reason) for f in d.flags] == [("self_harm", 4, "search-term")]


def test_watch_terms_match_despite_case_accents_and_spacing(engine: Engine):
    d = ask(engine, "https://www.bing.com/search?q=I+WANT+%20TO++DIE", "year11")
    assert [f.category for f in d.flags] == ["self_harm"]


def test_no_inspect_hosts_and_their_subdomains(engine: Engine):
    assert engine.no_inspect("www.childline.org.uk") and engine.no_inspect("nhs.uk")
    assert not engine.no_inspect("www.google.com") and not engine.no_inspect("")


def test_decisions_do_not_depend_on_earlier_requests(engine: Engine):
    # Verdicts are remembered per set of active schedules: a change of schedule, either way, shows.
    first = ask(engine, "https://www.instagram.com/", "year12", LESSON)
    assert first.action is Action.BLOCK
    assert ask(engine, "https://www.instagram.com/", "year12", LUNCH).action is Action.ALLOW
    assert ask(engine, "https://www.instagram.com/", "year12", LESSON) == first


def test_circumvention_goes_to_it_and_repeated_circumvention_to_the_dsl():
    from esafety.incidents.model import IncidentReport
    from esafety.incidents.routing import route

    policy = load_policy(ROOT / "policies" / "aup.yaml")
    assert route(IncidentReport("proxy", "vpn", 2, "VPN site"), policy).queue == "it_services"
    assert route(IncidentReport("pattern", "vpn", 4, "3 VPN attempts in 7 days"), policy).queue == "dsl"
    assert route(IncidentReport("proxy", "self_harm", 4, "search"), policy).queue == "dsl"
    assert route(IncidentReport("proxy", "gambling", 2, "casino"), policy).queue == "esafety_coordinator"


@pytest.mark.parametrize(("group", "expected"), [("year7", "Strict"), ("year10", "Strict"), ("year12", "Moderate"),
                                                  ("year13", "Moderate"), ("staff", "Moderate"), ("unknown", "Strict")])
def test_youtube_restricted_mode_follows_the_key_stage(engine: Engine, group: str, expected: str):
    # Year groups set nothing themselves: they take Restricted Mode from their key stage.
    d = ask(engine, "https://www.youtube.com/results?search_query=volcanoes", group)
    assert d.rewrite is not None and ("YouTube-Restrict", expected) in d.rewrite.headers


def test_a_group_setting_overrides_what_it_would_inherit(tmp_path: Path):
    text = (ROOT / "policies" / "aup.yaml").read_text().replace(
        "  year13: {parents: [sixth_form]}", "  year13: {parents: [sixth_form], youtube_restrict: Strict}\n"
        "  trainee_teachers: {parents: [staff]}")
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    (tmp_path / "policies" / "aup.yaml").write_text(text)
    policy = load_policy(tmp_path / "policies" / "aup.yaml")
    assert policy.groups["year13"].youtube_restrict == "Strict"
    assert policy.groups["year12"].youtube_restrict == "Moderate"
    assert (policy.groups["trainee_teachers"].on_error, policy.groups["year13"].on_error) == (Action.ALLOW,
                                                                                              Action.BLOCK)


@pytest.mark.parametrize("host", ["2130706433", "127.1", "0x7f.0.0.1", "0x7f.0xa", "017700000001", "[::ffff:7f00:1]"])
def test_every_spelling_of_an_address_is_an_ip_literal(engine: Engine, host: str):
    # The resolver reads each as an IPv4 address; as names they matched no list and passed.
    d = ask(engine, f"http://{host}/", "year10")
    assert (d.action, d.category) == (Action.BLOCK, "ip_literal")


@pytest.mark.parametrize("host", ["163.com", "1password.com", "4chan.org", "0x.example"])
def test_names_that_start_with_a_digit_stay_names(engine: Engine, host: str):
    assert ask(engine, f"https://{host}/", "year10").category != "ip_literal"


def test_a_group_the_policy_lacks_is_scanned_and_checked_as_the_default_group(engine: Engine):
    # A stale binding (a group since removed) must not switch off phrase scanning or download checks.
    assert engine.policy.default_group == "unknown"
    assert engine.scans_pages("no-such-group") is engine.scans_pages("unknown") is True
    assert engine.checks_downloads("no-such-group") is engine.checks_downloads("unknown") is True
