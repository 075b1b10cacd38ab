"""Proxy sign-in with directory passwords: a real esafety mitmdump asks unidentified clients to sign
in (407) and checks Basic credentials by binding to a real slapd as the person; the person's
synced policy group then applies. With the directory down, a credential checked before keeps
working, a new one is asked again, and the proxy carries on."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from esafety.store.db import upgrade
from tests.integration.conftest import access_rows, wait_for
from tests.support.proxy import ProxyUnderTest, start_proxy
from tests.support.slapd import Slapd, directory_policy, start_slapd, sync_directory


@dataclass
class School:
    slapd: Slapd
    proxy: ProxyUnderTest


@pytest.fixture(scope="module")
def school(tmp_path_factory: pytest.TempPathFactory) -> Iterator[School]:
    tmp = tmp_path_factory.mktemp("ldap-proxy")
    slapd = start_slapd(tmp / "slapd")
    try:
        policy = directory_policy(tmp, slapd, identity_extra="""
  unidentified: challenge
  proxy_auth: {basic: directory, cache: 5m}""")
        (tmp / "home").mkdir()
        database_url = f"sqlite:///{tmp / 'home' / 'esafety.db'}"
        upgrade(database_url)
        sync_directory(policy, database_url)  # the people and their groups, before the proxy starts
        proxy = start_proxy(tmp, policy=policy, database_url=database_url)
        try:
            yield School(slapd, proxy)
        finally:
            proxy.stop()
    finally:
        slapd.stop()


def client(s: School, username: str, password: str) -> httpx.Client:
    return httpx.Client(proxy=httpx.Proxy(s.proxy.url, auth=(username, password)),
                        verify=ssl.create_default_context(cafile=s.proxy.ca), timeout=15)


def metric(p: ProxyUnderTest, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in httpx.get(f"http://127.0.0.1:{p.metrics_port}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + "{"):
            got = ",".join(sorted(line[len(name) + 1:line.index("}")].split(",")))
            if got == want:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_pupil_signs_in_with_their_directory_password_and_gets_their_years_policy(school: School) -> None:
    amelia, head = school.slapd.person("amelia.smith"), school.slapd.person("shead")
    with client(school, "amelia.smith", amelia.password) as c:
        pupil = c.get("https://www.facebook.com/amelia")  # social networking: blocked for Year 7 at all times
        fine = c.get("https://www.example.org/homework")
    with client(school, "shead", head.password) as c:
        staff = c.get("https://www.facebook.com/head")  # and open to staff
    assert (pupil.status_code, fine.status_code, staff.status_code) == (403, 200, 200)
    assert school.proxy.origin.requests_to("www.facebook.com"), "the staff request reached the site"
    wait_for(lambda: len(access_rows(school.proxy, "www.facebook.com")) >= 2)
    who = {(r.username, r.policy_group, r.status) for r in access_rows(school.proxy, "www.facebook.com")}
    assert ("amelia.smith", "year7", 403) in who and ("shead", "staff", 200) in who


def test_a_wrong_directory_password_is_asked_again(school: School) -> None:
    with client(school, "oliver.jones", "not my password") as c:
        r = c.get("http://www.example.org/")
    assert r.status_code == 407
    assert r.headers.get_list("proxy-authenticate")[0].startswith("Basic realm=")
    assert metric(school.proxy, "esafety_proxy_auth_total", method="basic_directory", result="rejected") >= 1


def test_a_directory_account_the_sync_has_not_brought_in_gets_the_default_group(school: School) -> None:
    from tests.support.slapd import Person

    newcomer = Person("new.starter", "New", "Starter", "Pupils", "first-day", None)
    school.slapd.add_person(newcomer, ("Year 7",))
    with client(school, "new.starter", "first-day") as c:
        r = c.get("https://www.facebook.com/")
    assert r.status_code == 403, "signed in, filtered as the default group until the next sync"
    def newcomer_rows() -> list[str]:
        return [a.policy_group for a in access_rows(school.proxy, "www.facebook.com") if a.username == "new.starter"]

    wait_for(newcomer_rows)
    assert newcomer_rows() == ["unknown"]


def test_with_the_directory_down_a_checked_credential_keeps_working_and_a_new_one_is_asked(school: School) -> None:
    isla, george = school.slapd.person("isla.taylor"), school.slapd.person("george.brown")
    with client(school, "isla.taylor", isla.password) as c:
        assert c.get("http://www.example.org/before").status_code == 200
    errors_before = metric(school.proxy, "esafety_proxy_auth_total", method="basic_directory", result="error")
    school.slapd.stop()
    try:
        with client(school, "isla.taylor", isla.password) as c:
            assert c.get("http://www.example.org/during").status_code == 200, "remembered: no bind needed"
        with client(school, "george.brown", george.password) as c:
            assert c.get("http://www.example.org/during").status_code == 407, "cannot be checked: asked again"
        assert school.proxy.proc.poll() is None, "the proxy is still running"
        assert metric(school.proxy, "esafety_proxy_auth_total", method="basic_directory",
                      result="error") >= errors_before + 1
    finally:
        school.slapd.start()
    with client(school, "george.brown", george.password) as c:
        assert c.get("http://www.example.org/after").status_code == 200, "checked again once it is back"
