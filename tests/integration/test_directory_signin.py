"""Dashboard sign-in for people synced from the directory (no local password): their directory
password, checked by an LDAP bind against a real slapd, gives them a session that keeps working."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from dashboard.app import create_app
from esafety.config import load_settings
from esafety.store.db import sessions
from esafety.store.models import User
from esafety.webauth import LoginAttempt
from tests.support.dsl import login
from tests.support.slapd import Slapd, directory_policy, running_slapd, sync_directory


@pytest.fixture
def slapd(tmp_path: Path) -> Iterator[Slapd]:
    yield from running_slapd(tmp_path / "slapd")


@pytest.fixture
def client(tmp_path: Path, slapd: Slapd, database_url: str) -> TestClient:
    policy = directory_policy(tmp_path, slapd)
    sync_directory(policy, database_url)
    settings = load_settings({"ESAFETY_HOME": str(tmp_path / "home"), "ESAFETY_DATABASE_URL": database_url,
                              "ESAFETY_POLICY": str(policy)})
    return TestClient(create_app(settings), base_url="http://testserver")


def test_a_directory_pupil_signs_in_with_their_directory_password(client: TestClient, slapd: Slapd) -> None:
    amelia = slapd.person("amelia.smith")
    assert login(client, "amelia.smith", "not her password").status_code == 401
    r = login(client, "amelia.smith", amelia.password)
    assert r.status_code == 303, r.text
    page = client.get("/account")
    assert page.status_code == 200 and "Amelia Smith" in page.text, "the session is accepted on the next request"
    assert client.get("/incidents", follow_redirects=False).status_code == 403, "a pupil has no staff pages"


def test_an_empty_password_never_signs_in(client: TestClient, slapd: Slapd) -> None:
    assert login(client, "amelia.smith", "").status_code in (401, 422)


def test_a_retired_pupil_cannot_sign_in(client: TestClient, slapd: Slapd, database_url: str) -> None:
    oliver = slapd.person("oliver.jones")
    with sessions(database_url)() as s:
        s.query(User).filter(User.username == "oliver.jones").update({"active": False})
        s.commit()
    assert login(client, "oliver.jones", oliver.password).status_code == 401


def test_a_username_is_matched_whatever_its_case(client: TestClient, slapd: Slapd) -> None:
    assert login(client, "Amelia.Smith", slapd.person("amelia.smith").password).status_code == 303


def test_sign_in_while_the_directory_is_down_says_so_and_counts_no_failure(client: TestClient, slapd: Slapd,
                                                                         database_url: str) -> None:
    slapd.stop()
    for _ in range(6):  # more than the five failures that would lock the account
        r = login(client, "isla.taylor", slapd.person("isla.taylor").password)
        assert r.status_code == 503 and "directory cannot be reached" in r.text
    with sessions(database_url)() as s:
        assert s.query(LoginAttempt).filter(LoginAttempt.username == "isla.taylor").count() == 0
