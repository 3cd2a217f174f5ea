"""Context tokens and delegations: the rules of runtime.security.tokens, on a
throw-away PKI (files only; no server)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from runtime.config import SecuritySettings, Settings
from runtime.context import RequestContext
from runtime.security.pki import create_ca, ensure_pki, issue_certificate, local_paths
from runtime.security.tls import PlaintextRefusedError, TlsIdentity, check_plaintext_allowed
from runtime.security.tokens import ContextTokens, TokenError

DOMAIN = "trading.internal"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pki")
    ensure_pki(path, DOMAIN)
    return path


def tokens(pki: Path, principal: str, **kw: float) -> ContextTokens:
    return ContextTokens(TlsIdentity(principal, local_paths(pki, principal), DOMAIN), **kw)  # type: ignore[arg-type]


def user(tenant: str = "t1", scopes: tuple[str, ...] = ("orders:read", "orders:write")) -> RequestContext:
    return RequestContext(
        tenant_id=tenant, subject="u1", scopes=frozenset(scopes), roles=frozenset({"TRADER"})
    )


def reason(exc: pytest.ExceptionInfo[TokenError]) -> str:
    return exc.value.reason


def test_edge_token_round_trip_and_reuse(pki: Path) -> None:
    gateway, execution = tokens(pki, "gateway"), tokens(pki, "execution")
    token = gateway.mint("execution", user())
    assert gateway.mint("execution", user()) == token  # reused while fresh
    verified = execution.verify(token, "gateway")
    assert (verified.tenant_id, verified.subject, verified.grant) == ("t1", "u1", "edge")
    assert verified.scopes == {"orders:read", "orders:write"}
    assert execution.verify(token, "gateway") is verified  # cached


def test_wrong_audience_and_wrong_presenter_are_refused(pki: Path) -> None:
    token = tokens(pki, "gateway").mint("execution", user())
    with pytest.raises(TokenError) as caught:
        tokens(pki, "risk").verify(token, "gateway")
    assert reason(caught) == "wrong_audience"
    with pytest.raises(TokenError) as caught:
        tokens(pki, "execution").verify(token, "decision")
    assert reason(caught) == "issuer_not_peer"


def test_only_edge_principals_assert_a_tenant_on_their_own(pki: Path) -> None:
    with pytest.raises(TokenError) as caught:
        tokens(pki, "decision").mint("execution", user())
    assert reason(caught) == "no_authority"
    forged = tokens(pki, "decision")._sign(
        {"iss": "decision", "aud": "execution", "iat": int(time.time()), "exp": int(time.time()) + 60,
         "ten": "t1", "sub": "u", "scp": "orders:write", "grt": "edge"},
        "trading-ctx+jwt",
    )  # fmt: skip
    with pytest.raises(TokenError) as caught:
        tokens(pki, "execution").verify(forged, "decision")
    assert reason(caught) == "not_edge"


def test_a_chain_carries_the_context_on_and_may_only_narrow_it(pki: Path) -> None:
    gateway, execution, risk = tokens(pki, "gateway"), tokens(pki, "execution"), tokens(pki, "risk")
    inbound = gateway.mint("execution", user())
    received = execution.verify(inbound, "gateway")
    ctx = RequestContext(
        tenant_id="t1",
        subject="u1",
        scopes=frozenset({"orders:write"}),
        roles=received.roles,
        credential=inbound,
    )
    onward = execution.mint("risk", ctx)
    verified = risk.verify(onward, "execution")
    assert (verified.tenant_id, verified.grant) == ("t1", "chain")
    assert verified.scopes == frozenset({"orders:write"})
    wider = RequestContext(tenant_id="t1", subject="u1", scopes=frozenset({"admin"}), credential=inbound)
    with pytest.raises(TokenError) as caught:
        risk.verify(execution.mint("risk", wider), "execution")
    assert reason(caught) == "chain_widens"
    other = RequestContext(tenant_id="t2", subject="u1", credential=inbound)
    with pytest.raises(TokenError) as caught:
        risk.verify(execution.mint("risk", other), "execution")
    assert reason(caught) == "chain_mismatch"
    # A token the gateway made for portfolio cannot be used as execution's parent.
    foreign_parent = gateway.mint("portfolio", user())
    stolen = RequestContext(
        tenant_id="t1", subject="u1", scopes=frozenset({"orders:write"}), credential=foreign_parent
    )
    with pytest.raises(TokenError) as caught:
        risk.verify(execution.mint("risk", stolen), "execution")
    assert reason(caught) == "wrong_audience"


def delegation(pki: Path, holder: str = "decision", tenant: str = "t1", signer: str = "identity") -> str:
    token, _ = tokens(pki, signer).sign_delegation(
        holder, tenant, "strategy-orders", frozenset({"orders:write"}), frozenset({"execution"}), 600
    )
    return token


def test_a_delegation_lets_its_holder_act_for_its_tenant_at_its_audiences(pki: Path) -> None:
    decision, execution, risk = tokens(pki, "decision"), tokens(pki, "execution"), tokens(pki, "risk")
    ctx = RequestContext(tenant_id="t1", subject="service:decision", scopes=frozenset({"orders:write"}),
                         delegation=delegation(pki))  # fmt: skip
    verified = execution.verify(decision.mint("execution", ctx), "decision")
    assert (verified.grant, verified.purpose, verified.tenant_id) == ("dlg", "strategy-orders", "t1")
    # Execution may chain it on to risk (narrower or equal), as the server
    # interceptor hands it the context: credential AND the delegation it came with.
    onward = RequestContext(tenant_id="t1", subject="service:decision", scopes=frozenset({"orders:write"}),
                            credential=verified.token, delegation=verified.delegation)  # fmt: skip
    at_risk = risk.verify(execution.mint("risk", onward), "execution")
    assert (at_risk.grant, at_risk.purpose) == ("chain", "strategy-orders")
    # Not at an audience it does not name.
    with pytest.raises(TokenError) as caught:
        tokens(pki, "portfolio").verify(decision.mint("portfolio", ctx), "decision")
    assert reason(caught) == "delegation_audience"


@pytest.mark.parametrize(
    ("holder", "tenant", "signer", "scopes", "why"),
    [
        ("audit", "t1", "identity", {"orders:write"}, "delegation_not_holder"),
        ("decision", "t2", "identity", {"orders:write"}, "delegation_tenant"),
        ("decision", "t1", "gateway", {"orders:write"}, "delegation_issuer"),
        ("decision", "t1", "identity", {"orders:write", "orders:read"}, "delegation_scopes"),
    ],
)
def test_delegations_are_checked(
    pki: Path, holder: str, tenant: str, signer: str, scopes: set[str], why: str
) -> None:
    ctx = RequestContext(tenant_id="t1", subject="s", scopes=frozenset(scopes),
                         delegation=delegation(pki, holder, tenant, signer))  # fmt: skip
    decision = tokens(pki, "decision")
    with pytest.raises(TokenError) as caught:
        token = decision.mint("execution", ctx)
        tokens(pki, "execution").verify(token, "decision")
    assert reason(caught) == why


def test_tokens_signed_under_a_foreign_ca_are_refused(pki: Path, tmp_path: Path) -> None:
    ca = create_ca(tmp_path, name="attacker")
    issue_certificate(tmp_path, "gateway", trust_domain=DOMAIN, ca=ca)
    # The attacker's identity trusts its own CA so it can sign; execution trusts ours.
    attacker = ContextTokens(TlsIdentity("gateway", local_paths(tmp_path, "gateway"), DOMAIN))
    with pytest.raises(TokenError) as caught:
        tokens(pki, "execution").verify(attacker.mint("execution", user()), "gateway")
    assert reason(caught) == "untrusted_certificate"


def test_expired_tokens_are_refused(pki: Path) -> None:
    past = time.time() - 3600
    old = ContextTokens(TlsIdentity("gateway", local_paths(pki, "gateway"), DOMAIN), clock=lambda: past)
    with pytest.raises(TokenError) as caught:
        tokens(pki, "execution").verify(old.mint("execution", user()), "gateway")
    assert reason(caught) == "expired"


def test_rotated_certificate_files_are_picked_up(tmp_path: Path) -> None:
    ensure_pki(tmp_path, DOMAIN, ("risk",))
    identity = TlsIdentity("risk", local_paths(tmp_path, "risk"), DOMAIN, reload_s=0.001)
    first = identity.certificate.serial_number
    time.sleep(0.01)
    from runtime.security.pki import load_ca

    issue_certificate(tmp_path, "risk", trust_domain=DOMAIN, ca=load_ca(tmp_path))
    time.sleep(0.01)
    assert identity.certificate.serial_number != first
    assert identity.generation == 1


def test_plaintext_is_refused_outside_development() -> None:
    check_plaintext_allowed(Settings(environment="local", security=SecuritySettings(plaintext=True)))
    with pytest.raises(PlaintextRefusedError):
        check_plaintext_allowed(Settings(environment="production", security=SecuritySettings(plaintext=True)))
