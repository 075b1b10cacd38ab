"""The proxy's Kerberos acceptor (esafety.identity.negotiate) against a real MIT KDC: tickets from
kinit, tokens from a real GSS-API initiator (what curl and browsers use), keys from kadmin's keytab."""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from esafety.identity.negotiate import NegotiateAcceptor, NegotiateUnavailable
from tests.support.kdc import REALM, Kdc, initiate, start_kdc

pytestmark = pytest.mark.xdist_group("negotiate-acceptor")  # one worker keeps the module's KDC (and proxy)
USERS = {"amy.y8": "amy's passphrase", "Ms.Khan": "khan's passphrase", "amy/admin": "an admin instance"}
NTLM = "1.3.6.1.4.1.311.2.2.10"
KRB5 = "1.2.840.113554.1.2.2"
MS_KRB5 = "1.2.840.48018.1.2.2"
NTLM_NEGOTIATE = b"NTLMSSP\x00\x01\x00\x00\x00\x97\xb2\x08\xe2" + bytes(16)


@pytest.fixture(scope="module")
def kdc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kdc]:
    k = start_kdc(tmp_path_factory.mktemp("realm"), USERS)
    try:
        # Another service the KDC knows, in a keytab shared with HTTP/localhost.
        shutil.copy(k.keytab, k.root / "both.keytab")
        k.add_service("HTTP/other.test", k.root / "both.keytab")
        with pytest.MonkeyPatch.context() as mp:
            for key, value in k.acceptor_env().items():
                mp.setenv(key, value)
            mp.delenv("KRB5CCNAME", raising=False)
            yield k
    finally:
        k.stop()


@pytest.fixture(scope="module")
def tickets(kdc: Kdc) -> dict[str, Path]:
    return {user: kdc.kinit(user) for user in USERS}


@pytest.fixture(scope="module")
def acceptor(kdc: Kdc) -> NegotiateAcceptor:
    return NegotiateAcceptor(str(kdc.keytab), "HTTP/localhost")


def test_a_ticket_names_the_person(acceptor: NegotiateAcceptor, tickets: dict[str, Path]) -> None:
    r = acceptor.accept(initiate(tickets["amy.y8"]))
    assert (r.username, r.principal, r.reason) == ("amy.y8", f"amy.y8@{REALM}", "ok")
    assert r.reply, "the acceptor's mutual-authentication answer, for the client"
    bare = acceptor.accept(initiate(tickets["amy.y8"], spnego=False))  # Kerberos without SPNEGO
    assert (bare.username, bare.reason) == ("amy.y8", "ok")


def test_the_username_is_lower_case_without_the_realm(acceptor: NegotiateAcceptor, tickets: dict[str, Path]) -> None:
    r = acceptor.accept(initiate(tickets["Ms.Khan"]))
    assert (r.username, r.principal) == ("ms.khan", f"Ms.Khan@{REALM}")


def test_a_realm_outside_the_policys_is_rejected(kdc: Kdc, tickets: dict[str, Path]) -> None:
    strict = NegotiateAcceptor(str(kdc.keytab), realms=("SCHOOL.INTERNAL",))
    r = strict.accept(initiate(tickets["amy.y8"]))
    assert r.username is None
    assert r.reason == "realm ESAFETY.TEST is not accepted (realms: SCHOOL.INTERNAL)"
    assert r.principal == f"amy.y8@{REALM}", "the log says who was refused"
    listed = NegotiateAcceptor(str(kdc.keytab), realms=("esafety.test", "SCHOOL.INTERNAL"))
    assert listed.accept(initiate(tickets["amy.y8"])).username == "amy.y8"


def test_an_instance_principal_is_not_a_person(acceptor: NegotiateAcceptor, tickets: dict[str, Path]) -> None:
    r = acceptor.accept(initiate(tickets["amy/admin"]))
    assert r.username is None
    assert "not a person" in r.reason


def test_a_replayed_token_is_rejected_by_every_acceptor_on_the_machine(kdc: Kdc, acceptor: NegotiateAcceptor,
                                                                        tickets: dict[str, Path]) -> None:
    token = initiate(tickets["amy.y8"])
    assert acceptor.accept(token).username == "amy.y8"
    again = acceptor.accept(token)
    assert (again.username, again.reason) == (None, "ticket rejected: Request is a replay")
    # Another proxy worker (its own acceptor) shares krb5's replay cache, a file.
    worker2 = NegotiateAcceptor(str(kdc.keytab))
    assert worker2.accept(token).reason == "ticket rejected: Request is a replay"


def test_a_ticket_for_another_service_is_rejected(kdc: Kdc, acceptor: NegotiateAcceptor,
                                                  tickets: dict[str, Path]) -> None:
    token = initiate(tickets["amy.y8"], service="HTTP@other.test")
    r = acceptor.accept(token)
    assert r.username is None
    assert "HTTP/other.test" in r.reason, r.reason
    # A keytab holding both keys: bound to HTTP/localhost, the other service's ticket still fails;
    # unbound (principal None), any key in the keytab serves.
    bound = NegotiateAcceptor(str(kdc.root / "both.keytab"), "HTTP/localhost")
    assert bound.accept(initiate(tickets["amy.y8"], service="HTTP@other.test")).username is None
    assert bound.accept(initiate(tickets["amy.y8"])).username == "amy.y8"
    anyone = NegotiateAcceptor(str(kdc.root / "both.keytab"))
    assert anyone.accept(initiate(tickets["amy.y8"], service="HTTP@other.test")).username == "amy.y8"


def test_a_ticket_from_a_rogue_kdc_of_the_same_realm_is_rejected(tmp_path: Path, acceptor: NegotiateAcceptor,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # Someone runs their own KDC, names it ESAFETY.TEST and gives themselves ms.khan: their
    # HTTP/localhost key is not ours, so the ticket does not decrypt.
    rogue = start_kdc(tmp_path, {"Ms.Khan": "whatever I like"})
    try:
        monkeypatch.setenv("KRB5_CONFIG", str(rogue.krb5_conf))
        token = initiate(rogue.kinit("Ms.Khan"))
    finally:
        rogue.stop()
    monkeypatch.undo()
    r = acceptor.accept(token)
    assert r.username is None
    assert r.reason.startswith("ticket rejected:"), r.reason


def _der(tag: int, body: bytes) -> bytes:
    n, width = len(body), (len(body).bit_length() + 7) // 8
    size = bytes([n]) if n < 128 else bytes([0x80 | width]) + n.to_bytes(width)
    return bytes([tag]) + size + body


def _oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    out = bytes([40 * parts[0] + parts[1]])
    for v in parts[2:]:
        enc = [v & 0x7F]
        v >>= 7
        while v:
            enc.append(0x80 | (v & 0x7F))
            v >>= 7
        out += bytes(reversed(enc))
    return _der(0x06, out)


def _spnego_offer(mechs: list[str], token: bytes | None) -> bytes:
    """A SPNEGO NegTokenInit as a Windows client without a ticket for us sends it."""
    inner = _der(0xA0, _der(0x30, b"".join(_oid(m) for m in mechs)))
    if token is not None:
        inner += _der(0xA2, _der(0x04, token))
    return _der(0x60, _oid("1.3.6.1.5.5.2") + _der(0xA0, _der(0x30, inner)))


def test_ntlm_and_multi_round_spnego_are_rejected_with_the_reason(acceptor: NegotiateAcceptor) -> None:
    bare = acceptor.accept(NTLM_NEGOTIATE)
    assert bare.username is None and bare.reason.startswith("NTLM is not accepted, only Kerberos")
    only_ntlm = acceptor.accept(_spnego_offer([NTLM], NTLM_NEGOTIATE))
    assert only_ntlm.username is None and "NTLM only" in only_ntlm.reason
    # NTLM first with Kerberos as second choice: SPNEGO would pick Kerberos and ask for another round.
    second_round = acceptor.accept(_spnego_offer([NTLM, KRB5], NTLM_NEGOTIATE))
    assert second_round.username is None and second_round.reason.startswith("SPNEGO wants another round")
    no_ticket = acceptor.accept(_spnego_offer([KRB5], None))
    assert no_ticket.username is None and no_ticket.reason.startswith("SPNEGO wants another round")


def test_garbage_and_forged_tokens_are_rejected_never_raised(acceptor: NegotiateAcceptor,
                                                             tickets: dict[str, Path]) -> None:
    rnd = random.Random(17)
    for junk in (b"", b"garbage", bytes(64), rnd.randbytes(3000), b"\x60\x82\xff\xff", b"\xa1\x03\x0a\x01\x00",
                 b"x" * 70_000):
        r = acceptor.accept(junk)
        assert (r.username, r.principal) == (None, None), junk[:16]
        assert r.reason
    good = initiate(tickets["amy.y8"])
    assert acceptor.accept(good[: len(good) // 2]).username is None  # cut short
    # One byte changed anywhere: rejected, or (a byte of SPNEGO's unprotected wrapper) still Amy's own
    # ticket; never someone else.
    names = set()
    for _ in range(150):
        token = bytearray(initiate(tickets["amy.y8"]))
        token[rnd.randrange(len(token))] ^= 1 << rnd.randrange(8)
        names.add(acceptor.accept(bytes(token)).username)
    assert names <= {None, "amy.y8"} and None in names


def test_a_keytab_that_cannot_be_used_is_refused_up_front(kdc: Kdc, tmp_path: Path) -> None:
    cases = {
        str(tmp_path / "missing.keytab"): "cannot be read: No such file or directory",
        str(tmp_path): "cannot be read: Is a directory",
    }
    (tmp_path / "empty.keytab").write_bytes(b"")
    cases[str(tmp_path / "empty.keytab")] = "is empty"
    (tmp_path / "pem.keytab").write_text("-----BEGIN PRIVATE KEY-----\n")
    cases[str(tmp_path / "pem.keytab")] = "is not a Kerberos keytab"
    cases[""] = "needs keytab:"
    for path, message in cases.items():
        with pytest.raises(NegotiateUnavailable, match=message):
            NegotiateAcceptor(path)
    with pytest.raises(NegotiateUnavailable, match="no key for HTTP/proxy.school.internal"):
        NegotiateAcceptor(str(kdc.keytab), "HTTP/proxy.school.internal")


def test_a_keytab_gone_while_running_rejects_and_a_rotated_key_is_picked_up(kdc: Kdc, tmp_path: Path) -> None:
    keytab = tmp_path / "rotating.keytab"
    kdc.add_service("HTTP/rotating.test", keytab)
    acc = NegotiateAcceptor(str(keytab), "HTTP/rotating.test")
    ccache = kdc.kinit("amy.y8", USERS["amy.y8"])
    assert acc.accept(initiate(ccache, "HTTP@rotating.test")).username == "amy.y8"
    keytab.rename(tmp_path / "away")
    gone = acc.accept(initiate(ccache, "HTTP@rotating.test"))
    assert (gone.username, gone.reason[:16]) == (None, "ticket rejected:")
    (tmp_path / "away").rename(keytab)
    # A new key (kvno + 1) added to the keytab: new tickets are accepted without a restart.
    kdc.add_service_key("HTTP/rotating.test", keytab)
    fresh = kdc.kinit("amy.y8", USERS["amy.y8"])
    assert acc.accept(initiate(fresh, "HTTP@rotating.test")).username == "amy.y8"


def test_a_windows_offer_with_microsofts_kerberos_oid_first_is_accepted(acceptor: NegotiateAcceptor,
                                                                       tickets: dict[str, Path]) -> None:
    # Windows lists the mistaken MS OID first and sends its Kerberos token optimistically.
    offer = _spnego_offer([MS_KRB5, KRB5, NTLM], initiate(tickets["amy.y8"], spnego=False))
    r = acceptor.accept(offer)
    assert (r.username, r.reason) == ("amy.y8", "ok")
