"""The documented contract stays true: generated schemas, AsyncAPI refs, the signing scheme."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gatekeeper.messages import COMMANDS, render_schemas
from gatekeeper.sync.signing import SignatureError, canonical_json, check_fresh, sign, signature, verify_signature

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
    verify_signature(json.loads(example.group(1)), "example-secret")


def test_signature_ignores_key_order_and_covers_every_field() -> None:
    body = {"id": "a", "ts": "2026-01-01T00:00:00Z", "amount": 5, "plate": "MÜ X 1"}
    signed = sign(body, "s")
    reordered = dict(reversed(list(signed.items())))
    verify_signature(reordered, "s")
    assert canonical_json({"b": 1, "a": "Ü"}) == '{"a":"Ü","b":1}'.encode()
    for key, value in [("amount", 6), ("plate", "MU X 1"), ("extra", True)]:
        with pytest.raises(SignatureError) as err:
            verify_signature({**signed, key: value}, "s")
        assert err.value.reason == "bad_signature"
    assert signature(body, "s") != signature(body, "t")


@pytest.mark.parametrize(("sig", "reason"), [(None, "unsigned"), (5, "bad_signature"), ("ab" * 32, "bad_signature")])
def test_verify_rejects(sig: object, reason: str) -> None:
    body: dict[str, object] = {"id": "a"}
    if sig is not None:
        body["sig"] = sig
    with pytest.raises(SignatureError) as err:
        verify_signature(body, "s")
    assert err.value.reason == reason
    with pytest.raises(SignatureError) as err:
        verify_signature(sign(body, "s"), None)
    assert err.value.reason == "no_secret"


def test_freshness_window() -> None:
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    check_fresh(now - timedelta(seconds=299), now, 300)
    check_fresh(now + timedelta(seconds=299), now, 300)
    for off in (-301, 301):
        with pytest.raises(SignatureError):
            check_fresh(now + timedelta(seconds=off), now, 300)
