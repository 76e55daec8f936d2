"""The documented contract stays true: generated schemas, AsyncAPI refs, the signing scheme."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gatekeeper.messages import COMMANDS, render_schemas
from gatekeeper.sync.signing import (
    SignatureError,
    canonical_json,
    check_fresh,
    sign,
    signature,
    signed_bytes,
    verify_signature,
)

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_json_schemas_are_up_to_date() -> None:
    expected = render_schemas()
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in (DOCS / "schemas").glob("*.json")}
    stale = sorted(name for name in expected if on_disk.get(name) != expected[name])
    assert not stale, f"regenerate: python -m gatekeeper.messages --write-schemas docs/schemas ({stale})"
    assert set(on_disk) == set(expected), "docs/schemas holds files no model generates"


def test_asyncapi_names_every_command_and_existing_schemas() -> None:
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load((DOCS / "asyncapi.yaml").read_text(encoding="utf-8"))
    channels = doc["channels"]
    for name in COMMANDS:
        assert f"{{prefix}}/{{lot}}/cmd/{name}" in channels
    refs = re.findall(r"\./schemas/([a-z_]+\.json)", (DOCS / "asyncapi.yaml").read_text(encoding="utf-8"))
    assert refs and all((DOCS / "schemas" / ref).is_file() for ref in refs)


def test_documented_example_signature_verifies() -> None:
    text = (DOCS / "mqtt.md").read_text(encoding="utf-8")
    example = re.search(r'```json\n(\{"id": "pay-7f3a9c", "ts".*?\})\n```', text, re.S)
    assert example, "the signed example in docs/mqtt.md is gone"
    body = json.loads(example.group(1))
    verify_signature(body, "example-secret", lot="demo-lot", command="payment")
    assert signed_bytes(body, lot="demo-lot", command="payment").decode() in text.replace("\\n", "\n")


def test_signature_ignores_key_order_and_covers_every_field() -> None:
    body = {"id": "a", "ts": "2026-01-01T00:00:00Z", "amount": 5, "plate": "MÜ X 1"}
    signed = sign(body, "s", lot="lot-1", command="payment")
    assert signed["sig"].startswith("v2:")
    reordered = dict(reversed(list(signed.items())))
    verify_signature(reordered, "s", lot="lot-1", command="payment")
    assert canonical_json({"b": 1, "a": "Ü"}) == '{"a":"Ü","b":1}'.encode()
    for key, value in [("amount", 6), ("plate", "MU X 1"), ("extra", True), ("id", "b"),
                       ("ts", "2026-01-01T00:00:01Z")]:
        with pytest.raises(SignatureError) as err:
            verify_signature({**signed, key: value}, "s", lot="lot-1", command="payment")
        assert err.value.reason == "bad_signature"
    assert signature(body, "s", lot="l", command="c") != signature(body, "t", lot="l", command="c")


@pytest.mark.parametrize(("lot", "command"), [("lot-2", "payment"), ("lot-1", "open"), ("lot-1\npayment", "")])
def test_signature_binds_the_lot_and_the_command(lot: str, command: str) -> None:
    body = sign({"id": "a", "ts": "2026-01-01T00:00:00Z", "lane": "x"}, "s", lot="lot-1", command="payment")
    with pytest.raises(SignatureError) as err:
        verify_signature(body, "s", lot=lot, command=command)
    assert err.value.reason == "bad_signature"


def test_v1_signatures_are_refused_unless_enabled() -> None:
    body = sign({"id": "a", "ts": "2026-01-01T00:00:00Z"}, "s", lot="lot-1", command="open", version="v1")
    with pytest.raises(SignatureError) as err:
        verify_signature(body, "s", lot="lot-1", command="open")
    assert err.value.reason == "old_signature"
    verify_signature(body, "s", lot="lot-1", command="open", accept_v1=True)
    with pytest.raises(SignatureError):
        verify_signature({**body, "id": "b"}, "s", lot="lot-1", command="open", accept_v1=True)


@pytest.mark.parametrize(("sig", "reason"), [(None, "unsigned"), (5, "bad_signature"), ("v2:" + "ab" * 32, "bad_signature"),
                                             ("zz" * 32, "bad_signature")])
def test_verify_rejects(sig: object, reason: str) -> None:
    body: dict[str, object] = {"id": "a"}
    if sig is not None:
        body["sig"] = sig
    with pytest.raises(SignatureError) as err:
        verify_signature(body, "s", lot="l", command="payment")
    assert err.value.reason == reason
    with pytest.raises(SignatureError) as err:
        verify_signature(sign(body, "s", lot="l", command="payment"), None, lot="l", command="payment")
    assert err.value.reason == "no_secret"


def test_freshness_window() -> None:
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    check_fresh(now - timedelta(seconds=299), now, 300)
    check_fresh(now + timedelta(seconds=299), now, 300)
    for off in (-301, 301):
        with pytest.raises(SignatureError):
            check_fresh(now + timedelta(seconds=off), now, 300)
