"""Settings of every regstate command, each one also read from ``REGSTATE_<NAME>``.

The environment is read once, in :func:`Settings.from_env`; nothing else in the
code base looks at ``os.environ`` for regstate settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from processors.policy import CapPolicy, FoldPolicy

if TYPE_CHECKING:
    from streams.dialer.store import ExtraTables


class SettingsError(ValueError):
    """A REGSTATE_* variable holds a value that cannot be used."""


def _default_data_dir() -> str:
    # An installed package must never write into site-packages: the XDG user data
    # directory, as desktop and server tools do. ./dev points it into the checkout.
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "regstate")


@dataclass(frozen=True)
class Settings:
    """Every setting, with its default. ``REGSTATE_<UPPER NAME>`` overrides each."""

    bootstrap_servers: str = "127.0.0.1:9092"
    """Comma-separated Kafka bootstrap servers."""
    topic_prefix: str = "regstate."
    """Prefix of every public topic name (docs/design.md section 3)."""
    partitions: int = 8
    """Partition count of regstate.registrations and of the table (must match)."""
    replication_factor: int = 1
    """1 on a single development broker; 3 on a cluster (min.insync.replicas 2)."""
    store: str = "rocksdb"
    """Faust table store: ``rocksdb`` (default) or ``memory``."""
    web_port: int = 6066
    """HTTP port of the worker's query API."""
    worker_id: str = "w1"
    """Stable id of this worker; names the sweeper's node (``engine:<worker_id>``)."""
    data_dir: str = field(default_factory=_default_data_dir)
    """Where table stores (a worker's under ``engine/<prefix>engine/<worker_id>``, one per
    topic prefix), the front-end's user and nonce files and the dialer view's SQLite
    file live; default ``$XDG_DATA_HOME/regstate`` (``~/.local/share/regstate``)."""
    max_contacts: int = 10
    """Fold: most bindings one AOR may hold (the front-end answers by the same cap)."""
    max_contacts_policy: str = "reject"
    """Fold: past the cap, ``reject`` the request, or ``evict_oldest`` binding."""
    health_auth_fail_threshold: int = 3
    """Health: auth rejects with no success since, before an AOR is ``auth_failing``."""
    health_retransmission_threshold: int = 3
    """Health: retransmission rejects with no success since, before an AOR is ``unreachable``."""
    health_short_expiry_ms: int = 30_000
    """Health: a granted expiry below this counts toward ``flapping``."""
    health_flap_window_ms: int = 600_000
    """Health: an expiry followed by a registration within this window is one flap cycle."""
    health_flap_threshold: int = 3
    """Health: flap cycles (or short grants) before an AOR is ``flapping``."""
    grace_ms: int = 5000
    """Sweeper: how long past its expiry a binding may live before the engine expires it."""
    sweep_interval_ms: int = 1000
    """Sweeper: how often each worker looks for bindings past expiry plus grace."""
    sweep_resend_ms: int = 30_000
    """Sweeper: an ``expire`` already sent for a binding is sent again only after this long
    (it was lost, or the fold found it not yet due); never re-sent every tick."""
    sweep_batch: int = 5000
    """Sweeper: most ``expire`` events one tick appends (the rest wait for the next tick)."""
    web_bind: str = "127.0.0.1"
    """Worker and front-end: address their HTTP servers listen on (``0.0.0.0`` in a container)."""
    web_host: str = "127.0.0.1"
    """Worker: host name other workers use to reach this one's API (query routing)."""
    standby_replicas: int = 1
    """Worker: standby copies of each table partition kept warm by other workers."""
    rocksdb_block_cache_bytes: int = 16 * 1024 * 1024
    """Worker, RocksDB store: block cache of each table partition the worker holds (Faust
    opens one cache per partition; its default is 2 GiB each)."""
    rocksdb_write_buffer_bytes: int = 8 * 1024 * 1024
    """Worker, RocksDB store: size of one memtable per table partition (Faust: 64 MiB)."""
    rocksdb_max_write_buffers: int = 2
    """Worker, RocksDB store: memtables per table partition (RAM bound: this times the size)."""
    state_cache_size: int = 50_000
    """Worker: decoded AorStates kept in memory (about 1.5 KiB each) so hot AORs skip a decode."""
    producer_linger_ms: int = 5
    """Worker: how long the producer waits to fill a batch. Under live traffic outputs of
    several events then share one request (less CPU per event); it adds at most this
    much latency."""
    commit_interval_ms: int = 1000
    """Worker: how often consumed offsets are committed (only those whose outputs are acked)."""
    profile: str = ""
    """Worker: when set, a path; the worker writes a cProfile of its run there on exit."""
    # --- engine hot path (issue 13): batching and Faust's consumer
    engine_batch_max: int = 2000
    """Worker: source records folded per batch (each touched AOR's latest state is written
    to the table and regstate.bindings once per batch); 1 folds record by record."""
    engine_batch_within_ms: int = 10
    """Worker: how long a batch waits to fill before it is folded as it is (added latency
    at low rates is at most this)."""
    engine_max_poll_records: int = 2000
    """Worker: records per hand-off from Faust's consumer thread to the streams."""
    engine_stream_buffer: int = 8192
    """Worker: records the fold's stream may buffer (Faust pauses a partition's fetch at
    80 % of it)."""
    engine_fetch_max_wait_ms: int = 25
    """Worker: how long the broker may hold a fetch until ``engine_fetch_min_bytes`` of new
    records arrived (Faust hard-codes 1500 ms): at live rates the worker folds what came
    in this long, one batch per fetch (D110, D117)."""
    engine_fetch_min_bytes: int = 1 << 20
    """Worker: bytes of new records that answer a fetch at once (a backlog); below that
    the broker holds it ``engine_fetch_max_wait_ms``. 1 answers on the first record."""
    engine_fast_handoff: int = 1
    """Worker: 1 hands fetched records to the stream directly when that cannot block;
    0 uses Faust's per-record ``wait_first`` (for comparison in bench/quix_peer.py)."""
    engine_direct_batches: int = 1
    """Worker: 1 (with ``engine_fast_handoff``) passes each fetched batch of source records
    to the fold agent as one list instead of record by record through a Faust stream;
    0 uses the stream and ``take_events`` (for comparison in bench/quix_peer.py)."""
    engine_gc_gen0: int = 100_000
    """Worker: allocations between two young-generation collections of Python's cycle
    collector (Python's default, 700, cost about a fifth of the worker's CPU under
    load); objects built at start-up are frozen out of later collections. 0 keeps
    Python's settings."""
    log_level: str = "info"
    """Every command: log level (``debug``, ``info``, ``warning``, ``error``)."""
    # -- logging (issue 16): one setup for every command, streams/logsetup.py
    log_format: str = "text"
    """Every command: log lines as ``text`` or ``json`` (one object per line, for shippers)."""
    dialer_db: str = ""
    """Dialer view: its SQLite file; empty means ``<data_dir>/dialer-view.sqlite3``."""
    dialer_web_port: int = 6070
    """Dialer view: HTTP port of its lookups, SSE, /metrics (0: any free port)."""
    dialer_dsn: str = ""
    """Dialer view: ``mysql://user:password@host:port/db`` to keep the copy in MariaDB/MySQL
    instead of the SQLite file (``dialer_db`` is then unused). Needs PyMySQL."""
    dialer_batch_records: int = 20_000
    """Dialer view: most records applied in one SQLite transaction (with their offsets)."""
    dialer_phones: str = ""
    """Dialer view: the phones it expects: VICIdial's ``phones`` table as a
    ``mysql://user:password@host:port/asterisk`` DSN (active SIP phones), or a CSV or
    tab-separated export with header ``extension`` and ``server_ip``; empty: none."""
    dialer_node_map: str = ""
    """Dialer view: front-end node -> server IP, ``fe1=10.0.0.1,fe2=...`` or a CSV file
    (header ``node,server_ip``); empty: the expected-server check reports no mismatch."""
    # -- dialer view: tables of other software (issue 12) --
    dialer_phones_refresh_s: int = 60
    """Dialer view: seconds between two reads of ``dialer_phones`` (read in a thread of its
    own; lookups keep answering from the previous read meanwhile)."""
    dialer_kamailio_location: int = 0
    """Dialer view: 1 to also keep Kamailio's ``location`` table (usrloc ``db_mode=3``, table
    version 9) in the same database, in the same transaction as its own rows."""
    dialer_asterisk_contacts: int = 0
    """Dialer view: 1 to also keep Asterisk's realtime ``ps_contacts`` table (``endpoint`` =
    the extension) in the same database."""

    node_id: str = ""
    """Front-end: node id, the ``<node>`` of event ids; empty means ``fe-<host name>``.
    Must be unique in a deployment and stable across restarts."""
    sip_bind: str = "127.0.0.1"
    """Front-end: address the SIP UDP and TCP listeners bind (``0.0.0.0`` in production)."""
    sip_port: int = 5060
    """Front-end: SIP port, UDP and TCP (0: any free port, printed at start)."""
    sip_realm: str = "regstate"
    """Front-end: Digest realm; the HA1 hashes in the user file are bound to it."""
    sip_domains: str = ""
    """Front-end: comma-separated domains whose AORs this registrar accepts (the To host);
    a REGISTER for another gets 404. Empty: any domain, a development-only mode the node
    warns about at start and on /metrics (``regstate_frontend_any_domain 1``)."""
    sip_users_file: str = ""
    """Front-end: the HA1 user file; empty means ``<data_dir>/sip-users.json``."""
    sip_nonce_secret_file: str = ""
    """Front-end: HMAC key of the stateless nonces (created, mode 0600, if missing); empty
    means ``<data_dir>/sip-nonce.key``. A nonce is accepted only by the process that issued
    it, so a captured Authorization is refused at every other process and node."""
    sip_digest_algorithms: str = "SHA-256,MD5"
    """Front-end: Digest algorithms offered in 401 challenges, preferred first (RFC 8760);
    ``MD5`` alone for clients that read only the first challenge (e.g. SIPp 3.6)."""
    sip_nonce_lifetime_s: int = 300
    """Front-end: a nonce older than this gets ``stale=true``; the issuing process remembers
    the credentials it accepted this long, so a captured Authorization is refused there too."""
    sip_default_expires: int = 3600
    """Front-end: expiry granted to a Contact that asks for none (no parameter, no header)."""
    sip_min_expires: int = 60
    """Front-end: a non-zero expiry below this is answered 423 with Min-Expires."""
    sip_max_expires: int = 7200
    """Front-end: longer requested expiries are granted this much."""
    sip_rate_per_s: int = 50
    """Front-end: requests per second one source IP may send (token bucket refill)."""
    sip_rate_burst: int = 100
    """Front-end: token bucket size per source IP; requests beyond it are dropped unanswered."""
    sip_rate_key: str = "ip"
    """Front-end: what the rate limit and ban count per: ``ip`` (production), or
    ``ip_port`` where many phones share one address on purpose (a simulator, a lab)."""
    sip_ban_failures: int = 20
    """Front-end: wrong credentials carrying a valid nonce of ours, from one source for one
    user within ``sip_ban_s``, that ban that (source, user) pair (garbage never counts)."""
    sip_ban_s: int = 300
    """Front-end: how long a banned (source, user) pair's requests are ignored."""
    sip_ack_timeout_ms: int = 2000
    """Front-end: longest a REGISTER waits for Kafka's acknowledgement before it is answered
    503 (phones resend after 0.5, 1 and 2 s; those resends are absorbed meanwhile)."""
    sip_retry_after_s: int = 10
    """Front-end: the Retry-After of a 503 (Kafka unreachable or too slow)."""
    # --- front-end hostile input (issue 14) ---
    sip_ban_exempt: str = ""
    """Front-end: comma-separated addresses or networks never banned (known NAT addresses of
    call centres); their rate limit still applies (``sip_rate_*``)."""
    sip_trusted_proxies: str = ""
    """Front-end: addresses or networks of proxies/load balancers in front of the node; their
    relayed requests are rate-limited and banned per original source (the bottom Via)."""
    sip_reject_budget: int = 5
    """Front-end: ``reject`` events logged per AOR and source within ``sip_reject_window_s``;
    further rejects are answered the same but only counted (a flood writes no log)."""
    sip_reject_window_s: int = 60
    """Front-end: the window of ``sip_reject_budget``."""
    sip_tcp_max_connections: int = 2000
    """Front-end: open TCP connections per process; more are closed at accept."""
    sip_tcp_max_per_address: int = 50
    """Front-end: open TCP connections per source address (exempt and trusted: no limit)."""
    sip_tcp_message_timeout_s: int = 10
    """Front-end: a TCP message started must be complete within this long."""
    frontend_web_port: int = 6068
    """Front-end: HTTP port of /metrics, /healthz and /readyz (process i of several: this
    plus i; 0: any free port, printed at start). Listens on ``web_bind``."""
    sip_processes: int = 1
    """Front-end: processes sharing the SIP port (SO_REUSEPORT; Linux spreads UDP by source
    address and port, TCP by connection). Process i logs as node ``<node>#i`` (its own
    ``seq``); alerting and the dialer count them as one node. Rate limits and bans are
    per process. Needs a fixed ``sip_port``."""

    # --- security (issue 15): Kafka SASL/TLS, HTTP bearer token and TLS, MariaDB TLS.
    kafka_security_protocol: str = "PLAINTEXT"
    """Every Kafka client: ``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``."""
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    """Every Kafka client, SASL protocols: ``SCRAM-SHA-512``, ``SCRAM-SHA-256`` or ``PLAIN``."""
    kafka_sasl_username: str = ""
    """Every Kafka client, SASL protocols: the principal's user name."""
    kafka_sasl_password_file: str = ""
    """Every Kafka client, SASL protocols: file holding the password (first line). Never
    taken from the command line or the environment, never logged."""
    kafka_ssl_cafile: str = ""
    """Every Kafka client, SSL protocols: PEM file of the CA that signed the brokers'
    certificates; empty: the system's trusted CAs."""
    kafka_ssl_certfile: str = ""
    """Every Kafka client, SSL protocols: PEM client certificate (mutual TLS), or empty."""
    kafka_ssl_keyfile: str = ""
    """Every Kafka client, SSL protocols: PEM key of ``kafka_ssl_certfile``."""
    http_token_file: str = ""
    """Every HTTP server (worker, dialer view, alerting, front-end): file holding the bearer
    token that endpoints returning phone data or changing state require; health probes and
    ``/metrics`` (no phone data) never do. Empty: no token asked (development only)."""
    http_tls_certfile: str = ""
    """Every HTTP server: PEM certificate chain; with ``http_tls_keyfile`` it serves HTTPS."""
    http_tls_keyfile: str = ""
    """Every HTTP server: PEM key of ``http_tls_certfile``."""
    mysql_ssl_ca: str = ""
    """Dialer view on MariaDB/MySQL: CA file; when set the connection uses TLS and verifies
    the server's certificate against it."""
    mysql_ssl_cert: str = ""
    """Dialer view on MariaDB/MySQL: client certificate (mutual TLS), or empty."""
    mysql_ssl_key: str = ""
    """Dialer view on MariaDB/MySQL: key of ``mysql_ssl_cert``."""

    # ---- HEP ingest (`regstate hep`, issue 11)
    hep_bind: str = "127.0.0.1"
    """HEP listener: address its UDP and TCP sockets bind (``0.0.0.0`` to take a mirror
    from other machines)."""
    hep_port: int = 9060
    """HEP listener: port, UDP and TCP (the port Homer uses; 0: any free port, printed)."""
    hep_auth_key: str = ""
    """HEP listener: when set, packets whose auth key chunk differs (or is missing) are
    counted and dropped (Asterisk ``capture_password``, Kamailio ``hep_capture_id`` peers)."""
    hep_forward: str = ""
    """HEP listener: ``host:port`` every packet received is re-sent to unchanged (over
    UDP), so a site keeps its Homer behind regstate."""
    hep_nodes: str = ""
    """HEP listener: capture agent id -> node name, ``2001=ast1,2002=kam1``; an agent not
    listed logs as node ``hep-<agent id>``."""
    hep_servers: str = ""
    """HEP listener: comma-separated addresses (``ip`` or ``ip:port``) of the monitored
    registrars/PBXs; a REGISTER one of them sends (to a carrier) is a trunk, logged as
    ``trunk:<AOR>``."""
    hep_web_port: int = 6072
    """HEP listener: HTTP port of /metrics, /healthz and /readyz (0: any free port)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``REGSTATE_*`` variables; raise SettingsError naming a bad one."""
        source = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            name = f"REGSTATE_{f.name.upper()}"
            raw = source.get(name)
            if raw is None or raw == "":
                continue
            if f.type in ("int", int):
                try:
                    values[f.name] = int(raw)
                except ValueError:
                    raise SettingsError(f"{name}={raw!r} is not an integer") from None
            else:
                values[f.name] = raw
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise SettingsError on values no command can work with."""
        if self.store not in ("rocksdb", "memory"):
            raise SettingsError(f"REGSTATE_STORE={self.store!r}: use 'rocksdb' or 'memory'")
        if self.max_contacts_policy not in ("reject", "evict_oldest"):
            raise SettingsError(
                f"REGSTATE_MAX_CONTACTS_POLICY={self.max_contacts_policy!r}: "
                "use 'reject' or 'evict_oldest'"
            )
        if self.log_format not in ("text", "json"):
            raise SettingsError(f"REGSTATE_LOG_FORMAT={self.log_format!r}: use text or json")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise SettingsError(
                f"REGSTATE_LOG_LEVEL={self.log_level!r}: use debug, info, warning or error"
            )
        validate_security(self)
        for name in (
            "grace_ms",
            "sweep_resend_ms",
            "standby_replicas",
            "web_port",
            "dialer_web_port",
            "producer_linger_ms",
            "health_short_expiry_ms",
            "health_flap_window_ms",
            "engine_batch_within_ms",
            "engine_fetch_max_wait_ms",
            "engine_fast_handoff",
            "engine_direct_batches",
            "engine_gc_gen0",
        ):
            if getattr(self, name) < 0:
                raise SettingsError(f"REGSTATE_{name.upper()} must not be negative")
        for name in (
            "partitions",
            "replication_factor",
            "max_contacts",
            "sweep_interval_ms",
            "sweep_batch",
            "rocksdb_block_cache_bytes",
            "rocksdb_write_buffer_bytes",
            "rocksdb_max_write_buffers",
            "state_cache_size",
            "commit_interval_ms",
            "dialer_batch_records",
            "dialer_phones_refresh_s",
            "health_auth_fail_threshold",
            "health_retransmission_threshold",
            "health_flap_threshold",
            "engine_batch_max",
            "engine_max_poll_records",
            "engine_stream_buffer",
            "engine_fetch_min_bytes",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(f"REGSTATE_{name.upper()} must be at least 1")

    def dialer_tables(self) -> ExtraTables:
        """The tables of other software the dialer view keeps (Kamailio, Asterisk)."""
        from streams.dialer.store import ExtraTables

        return ExtraTables(
            kamailio_location=bool(self.dialer_kamailio_location),
            asterisk_contacts=bool(self.dialer_asterisk_contacts),
        )

    def dialer_db_path(self) -> str:
        """The dialer view's SQLite file (``dialer_db``, else under ``data_dir``)."""
        return self.dialer_db or str(Path(self.data_dir) / "dialer-view.sqlite3")

    def fold_policy(self) -> FoldPolicy:
        """The fold's policy. Worker, replay, audit and problems all take it from here,
        so the live table and every replay apply the same rules."""
        policy: CapPolicy = (
            "evict_oldest" if self.max_contacts_policy == "evict_oldest" else "reject"
        )
        return FoldPolicy(
            max_contacts=self.max_contacts,
            max_contacts_policy=policy,
            auth_fail_threshold=self.health_auth_fail_threshold,
            retransmission_threshold=self.health_retransmission_threshold,
            short_expiry_ms=self.health_short_expiry_ms,
            flap_window_ms=self.health_flap_window_ms,
            flap_threshold=self.health_flap_threshold,
        )

    def topic(self, name: str) -> str:
        """Full name of a public topic, e.g. ``topic('registrations')``."""
        return f"{self.topic_prefix}{name}"

    def engine_group(self) -> str:
        """The workers' Faust app id: their consumer group and their topics' prefix."""
        return f"{self.topic_prefix}engine"

    def engine_dir(self) -> Path:
        """This worker's local table: one directory per log it copies (D123).

        The table is a copy of one changelog, resumed from the offsets Faust keeps
        beside it. Shared by two topic prefixes, a worker would resume the other
        log's copy from the other log's offsets: that log's AORs would stay in the
        table (phantom bindings, which the sweeper would expire into this log) and
        this log's first records would never be applied.
        """
        return Path(self.data_dir) / "engine" / self.engine_group() / self.worker_id


KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


def validate_security(s: Settings) -> None:
    """SettingsError on a security setting no client can use (issue 15)."""
    if s.kafka_security_protocol not in KAFKA_SECURITY_PROTOCOLS:
        raise SettingsError(
            f"REGSTATE_KAFKA_SECURITY_PROTOCOL={s.kafka_security_protocol!r}: use "
            + ", ".join(KAFKA_SECURITY_PROTOCOLS)
        )
    if s.kafka_security_protocol.startswith("SASL_"):
        if s.kafka_sasl_mechanism not in KAFKA_SASL_MECHANISMS:
            raise SettingsError(
                f"REGSTATE_KAFKA_SASL_MECHANISM={s.kafka_sasl_mechanism!r}: use "
                + ", ".join(KAFKA_SASL_MECHANISMS)
            )
        if not s.kafka_sasl_username or not s.kafka_sasl_password_file:
            raise SettingsError(
                f"REGSTATE_KAFKA_SECURITY_PROTOCOL={s.kafka_security_protocol} needs "
                "REGSTATE_KAFKA_SASL_USERNAME and REGSTATE_KAFKA_SASL_PASSWORD_FILE"
            )
    if bool(s.kafka_ssl_certfile) != bool(s.kafka_ssl_keyfile):
        raise SettingsError(
            "REGSTATE_KAFKA_SSL_CERTFILE and REGSTATE_KAFKA_SSL_KEYFILE go together"
        )
    if bool(s.http_tls_certfile) != bool(s.http_tls_keyfile):
        raise SettingsError("REGSTATE_HTTP_TLS_CERTFILE and REGSTATE_HTTP_TLS_KEYFILE go together")
    if bool(s.mysql_ssl_cert) != bool(s.mysql_ssl_key):
        raise SettingsError("REGSTATE_MYSQL_SSL_CERT and REGSTATE_MYSQL_SSL_KEY go together")
