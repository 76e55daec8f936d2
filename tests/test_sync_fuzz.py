"""Property-based fuzzing of every command type: authentic (correctly signed) commands with hostile
values, and hostile bytes. Whatever arrives: a reply that names the problem, never an internal
error, never a traceback in the log, and the store keeps working."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from gatekeeper.config import MqttConfig, Settings, SiteConfig, StorageConfig
from gatekeeper.messages import COMMANDS, Reply
from gatekeeper.store import Store
from gatekeeper.sync.commands import CommandHandler
from gatekeeper.sync.signing import sign

SECRET = "fuzz-secret"
LOT = "lot-f"
NOW = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
#: Markers replaced after json.dumps by number literals Python would never write.
RAW_NUMBERS = {"__1e400__": "1e400", "__m1e400__": "-1e400", "__2p70__": str(2**70), "__1e-400__": "1e-400",
               "__bigfloat__": "123456789012345678901234567890.5", "__zero_e__": "0e0"}

LONE_SURROGATES = st.sampled_from(["\ud800", "\udfff", "a\ud83d", "\udc00b"])
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
NASTY = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from(list(RAW_NUMBERS)), ANY_TEXT, LONE_SURROGATES, st.text(min_size=200, max_size=800),
    st.sampled_from(["2026-05-04T08:00:00Z", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00",
                     "2026-13-45T00:00:00Z", "2026-05-04T08:00:00", "", "BAB123", "allow", "upsert", "add"]),
    st.lists(st.integers(), max_size=3), st.dictionaries(ANY_TEXT, st.integers(), max_size=3),
)
FIELDS = {
    "payment": ["session_id", "plate", "amount", "currency", "reference", "paid_at"],
    "open": ["lane", "reason"],
    "lists": ["kind", "op", "entries"],
    "reservation": ["op", "reservation_id", "plate", "valid_from", "valid_until", "note", "schedule"],
    "tariff": ["tariff"],
}
VALID = {
    "payment": {"session_id": 1, "amount": 100, "reference": "psp-1"},
    "open": {"lane": "exit-1", "reason": "fuzz"},
    "lists": {"kind": "allow", "op": "add", "entries": [{"plate": "FZ 1", "schedule": [
        {"days": ["mon", "tue"], "start": "22:00", "end": "06:00"}]}]},
    "reservation": {"op": "upsert", "reservation_id": "r-1", "plate": "FZ 2",
                    "valid_from": NOW.isoformat(), "valid_until": (NOW + timedelta(hours=1)).isoformat()},
    "tariff": {"tariff": {"free_minutes": 1, "interval_minutes": 60, "rate": 1, "daily_max": 0, "grace_minutes": 1}},
}
#: Schedule rules: mostly well-formed, with hostile days, times and keys mixed in.
TIMES = st.one_of(st.sampled_from(["00:00", "07:00", "19:00", "23:59", "24:00", "24:01", "7:00", "07:60", ""]), NASTY)
DAYS = st.one_of(st.lists(st.sampled_from(["mon", "tue", "sat", "sun", "Mon", "monday", ""]), max_size=8), NASTY)
RULE = st.one_of(st.fixed_dictionaries({"days": DAYS, "start": TIMES, "end": TIMES}, optional={"tz": NASTY}), NASTY)
SCHEDULE = st.one_of(st.lists(RULE, max_size=3), NASTY)
ENTRY = st.fixed_dictionaries({"plate": NASTY}, optional={"valid_from": NASTY, "valid_until": NASTY, "note": NASTY,
                                                          "schedule": SCHEDULE})
TARIFF = st.fixed_dictionaries({k: st.one_of(NASTY, st.integers(0, 100)) for k in
                                ("free_minutes", "interval_minutes", "rate", "daily_max", "grace_minutes")},
                               optional={"currency": NASTY, "currency_digits": NASTY})


def _encode(body: dict[str, Any]) -> bytes:
    text = json.dumps(body)
    for marker, literal in RAW_NUMBERS.items():
        text = text.replace(f'"{marker}"', literal)
    return text.encode()


@st.composite
def commands(draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(st.sampled_from(list(COMMANDS)))
    body: dict[str, Any] = dict(VALID[name])
    for key in draw(st.lists(st.sampled_from(FIELDS[name] + ["extra", "id", "ts"]), max_size=4)):
        if key == "entries":
            body[key] = draw(st.one_of(NASTY, st.lists(ENTRY, max_size=3)))
        elif key == "tariff":
            body[key] = draw(st.one_of(NASTY, TARIFF))
        elif key == "schedule":
            body[key] = draw(SCHEDULE)
        else:
            body[key] = draw(NASTY)
    body.setdefault("id", uuid.uuid4().hex)
    body.setdefault("ts", NOW.isoformat())
    how = draw(st.sampled_from(["signed", "signed", "signed", "unsigned", "raw"]))
    if how == "raw":
        return name, draw(st.binary(max_size=300))
    if how == "signed":
        try:
            body = sign(body, SECRET, lot=LOT, command=name)
        except (UnicodeEncodeError, ValueError):
            body["sig"] = "v2:" + "0" * 64  # unsignable (a lone surrogate): the edge must refuse it all the same
    return name, _encode(body)


@pytest.fixture(scope="module")
def handler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CommandHandler]:
    data = Path(tmp_path_factory.mktemp("fuzz")) / "data"
    cfg = Settings(site=SiteConfig(lot_id=LOT, capacity=5), mqtt=MqttConfig(hmac_secret=SecretStr(SECRET)),
                   storage=StorageConfig(data_dir=data))
    with Store.from_settings(cfg, clock=lambda: NOW) as store:
        with store.transaction() as conn:
            conn.execute("INSERT INTO sessions(plate_read, plate, entry_lane, entry_at, status) "
                         "VALUES ('FZ1','FZ1','entry-1',?, 'open')", ((NOW - timedelta(hours=1)).isoformat(),))
        yield CommandHandler(cfg, store, secret=SECRET, clock=lambda: NOW, open_handler=lambda *a: None)


class _Tracebacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.records.append(record)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.too_slow])
@given(command=commands())
def test_fuzzed_commands_never_reach_an_internal_error(handler: CommandHandler, command: tuple[str, bytes]) -> None:
    name, payload = command
    watch = _Tracebacks()
    logging.getLogger("gatekeeper").addHandler(watch)
    try:
        outcome = handler.process(f"gatekeeper/{LOT}/cmd/{name}", payload)
    finally:
        logging.getLogger("gatekeeper").removeHandler(watch)
    reply = outcome.reply
    assert not (reply.error or "").startswith("internal error"), reply.error
    assert watch.records == [], [r.getMessage() for r in watch.records]
    Reply.model_validate_json(reply.model_dump_json())  # the reply itself is always sendable
    json.dumps(reply.model_dump(mode="json"), ensure_ascii=False).encode("utf-8")
    if reply.status == "error":
        assert reply.error and "Traceback" not in reply.error


@pytest.mark.parametrize(("body", "field"), [
    ({"session_id": 2**70, "amount": 1}, "session_id"),
    ({"session_id": 1, "amount": "__1e400__"}, "amount"),
    ({"session_id": 1, "amount": 1, "reference": "\ud800"}, "reference"),
    ({"session_id": 1, "amount": 1, "reference": "x" * 201}, "reference"),
    ({"session_id": 1, "amount": 1, "paid_at": "0001-01-01T00:00:00+14:00"}, "paid_at"),
])
def test_bad_values_get_a_clear_error_naming_the_field(handler: CommandHandler, body: dict[str, Any],
                                                      field: str) -> None:
    full = {"id": uuid.uuid4().hex, "ts": NOW.isoformat(), **body}
    try:
        full = sign(full, SECRET, lot=LOT, command="payment")
    except UnicodeEncodeError:
        full["sig"] = "v2:" + "0" * 64
    reply = handler.handle(f"gatekeeper/{LOT}/cmd/payment", _encode(full))
    assert reply.status == "error" and reply.error and reply.error.startswith(field), reply.error
    assert reply.id == full["id"]
