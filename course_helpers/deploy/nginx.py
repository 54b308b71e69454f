"""nginx as the load balancer: a generated config, run unprivileged-style as a subprocess.

Passive health checks (``max_fails``/``fail_timeout``) plus ``proxy_next_upstream`` send a
request that hit a dead replica to a live one, so a crash costs few requests. Weights are
part of the model (canaries reuse it); ``update`` reloads with SIGHUP, without a restart.

Lesson 09 adds two optional routing modes on top of the same config:

* ``split`` (:class:`Split`): sticky A/B assignment with ``split_clients`` on a user id
  taken from a header (``X-User-ID``) or, without it, a cookie (``user_id``): the same user
  always reaches the same upstream. The chosen variant comes back in ``X-Variant``.
* ``mirror`` (an upstream name): nginx ``mirror`` sends a copy of every request to that
  upstream (a shadow); its answer is discarded, the client sees only the default's. nginx
  finishes a request only when its mirror subrequests have finished, so a client's next
  request on the same keep-alive connection waits for a slow shadow; with ``mirror_relay``
  (the default) the copy goes through a relay (a second ``server`` of the same nginx on
  ``relay_port``) that acknowledges it at once and mirrors it on to the shadow, so no client
  connection waits for the shadow (fire and forget, as Envoy's request mirroring).

Every answer carries ``X-Upstream`` (the replica address that answered).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time
from pathlib import Path

from .. import config
from ..errors import CourseError
from ..supervisor import Supervisor, free_port


@dataclasses.dataclass(frozen=True)
class Server:
    address: str  # host:port
    weight: int = 1
    backup: bool = False


@dataclasses.dataclass
class Upstream:
    name: str
    servers: list[Server]


@dataclasses.dataclass(frozen=True)
class Split:
    """Sticky split of users between upstreams: ``shares`` maps upstream name -> percent
    (summing to 100). The user id is the ``header`` (``X-User-ID``) or else the ``cookie``;
    requests with neither are split by client address and port (not sticky)."""

    shares: tuple[tuple[str, float], ...]
    header: str = "X-User-ID"
    cookie: str = "user_id"
    salt: str = "ab"

    @classmethod
    def of(cls, shares: dict[str, float], **kw) -> "Split":
        return cls(tuple(shares.items()), **kw)


#: Passive health check: a replica is skipped for ``FAIL_TIMEOUT_S`` after ``MAX_FAILS``
#: failed attempts within that time. One failure is not enough: on a CPU-starved machine a
#: single error on the surviving replica (a keep-alive connection the server closed as
#: nginx reused it) would otherwise take it out too, and with every replica marked down
#: nginx answers 502 at once for the whole ``fail_timeout``.
MAX_FAILS = 3
FAIL_TIMEOUT_S = 2
#: nginx closes idle upstream connections before the server does (gunicorn --keep-alive 5),
#: so it never sends a request on a connection the server is closing.
UPSTREAM_KEEPALIVE_S = 4
#: ``access_log``'s line format (``log_format timing``): when the request ended (epoch s, ms
#: resolution), nginx's time for it (s: first byte read to log, which for a mirrored request
#: waits for the mirror subrequest), the live upstream's time(s) (s, comma-separated when
#: nginx retried another replica; ``-`` with none), the status and the request id.
TIMING_LOG_FORMAT = "$msec $request_time $upstream_response_time $status $request_id"


def _var(header: str) -> str:
    return "$http_" + header.lower().replace("-", "_")


def _split_block(split: Split, names: set[str]) -> tuple[str, str]:
    """The ``map`` + ``split_clients`` blocks and the proxy_pass target for a split."""
    if not split.shares:
        raise CourseError("a split needs at least one upstream share")
    for name, share in split.shares:
        if name not in names:
            raise CourseError(f"split upstream {name!r} is not among {sorted(names)}")
        if share < 0:
            raise CourseError(f"split share of {name!r} is negative ({share})")
    total = sum(share for _, share in split.shares)
    if abs(total - 100) > 1e-6:
        raise CourseError(f"split shares must sum to 100 (percent), got {total:g}")
    lines = []
    for i, (name, share) in enumerate(split.shares):
        if share == 0:
            continue
        key = "*" if i == len(split.shares) - 1 else f"{share:g}%"
        lines.append(f"        {key} {name};")
    if not lines[-1].lstrip().startswith("*"):  # the last share was 0: give the rest to the last kept
        lines[-1] = "        * " + lines[-1].split()[-1]
    block = f"""    map {_var(split.header)} $ab_user {{
        "" $cookie_{split.cookie};
        default {_var(split.header)};
    }}
    map $ab_user $ab_key {{
        "" "$remote_addr:$remote_port";
        default "{split.salt}:$ab_user";
    }}
    split_clients "$ab_key" $ab_variant {{
{chr(10).join(lines)}
    }}
"""
    return block, "$ab_variant"


def render_config(workdir: Path, port: int, upstreams: list[Upstream],
                  default: str | None = None, max_fails: int = MAX_FAILS,
                  fail_timeout_s: int = FAIL_TIMEOUT_S, worker_processes: int = 1,
                  split: Split | None = None, mirror: str | None = None,
                  relay_port: int | None = None, access_log: str | Path | None = None) -> str:
    """The whole nginx.conf: every path under ``workdir``, listening on 127.0.0.1:``port``.

    ``split`` routes by sticky user id instead of to ``default``; ``mirror`` names an
    upstream that gets a copy of every request (its answers are discarded), through a
    relay listening on 127.0.0.1:``relay_port`` if given, else directly (the client's
    keep-alive connection then waits for the shadow's answer). ``access_log``: a file that
    gets one :data:`TIMING_LOG_FORMAT` line per proxied client request (not the mirror's
    copies, not ``/lb-health``).
    """
    if not upstreams:
        raise CourseError("a load balancer needs at least one upstream")
    default = default or upstreams[0].name
    names = {u.name for u in upstreams}
    if default not in names:
        raise CourseError(f"default upstream {default!r} is not among {[u.name for u in upstreams]}")
    if mirror is not None and mirror not in names:
        raise CourseError(f"mirror upstream {mirror!r} is not among {sorted(names)}")
    split_block, target = _split_block(split, names) if split else ("", default)
    mirror_lines = ""
    mirror_location = ""
    relay_server = ""
    if mirror:
        mirror_lines = "\n            mirror /_mirror;\n            mirror_request_body on;"
        # the shadow's answer is thrown away; short timeouts so a slow shadow costs little
        to_shadow = f"""proxy_pass http://{mirror}$request_uri;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 1s;
            proxy_read_timeout 5s;"""
        if relay_port is None:
            mirror_location = f"""
        location = /_mirror {{
            internal;
            {to_shadow}
            proxy_set_header X-Request-ID $request_id;
            proxy_set_header X-Shadow "1";
        }}"""
        else:
            # HTTP/1.0, no keep-alive: the relay holds each connection until the shadow has
            # answered, so a reused one would make the next copy wait
            mirror_location = f"""
        location = /_mirror {{
            internal;
            proxy_pass http://127.0.0.1:{relay_port}$request_uri;
            proxy_set_header X-Request-ID $request_id;
            proxy_set_header X-Shadow "1";
            proxy_connect_timeout 1s;
        }}"""
            relay_server = f"""
    upstream _mirror_ack {{
        server 127.0.0.1:{relay_port};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{relay_port};
        location = /_ack {{ return 204; }}
        location = /_shadow {{
            internal;
            {to_shadow}
        }}
        location / {{
            mirror /_shadow;
            set $ack /_ack;
            proxy_pass http://_mirror_ack$ack;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""
    variant_header = '\n            add_header X-Variant $ab_variant always;' if split else ""
    log_format = log_line = ""
    if access_log is not None:
        log_format = f"    log_format timing '{TIMING_LOG_FORMAT}';\n"
        log_line = f"\n            access_log {access_log} timing;"
    blocks = []
    for up in upstreams:
        if not up.servers or all(s.weight == 0 for s in up.servers):
            raise CourseError(f"upstream {up.name!r} has no server with a positive weight")
        lines = []
        for s in up.servers:
            if s.weight == 0:
                continue  # weight 0: out of rotation
            extra = " backup" if s.backup else ""
            lines.append(f"        server {s.address} weight={s.weight} max_fails={max_fails} "
                         f"fail_timeout={fail_timeout_s}s{extra};")
        blocks.append(f"    upstream {up.name} {{\n" + "\n".join(lines) +
                      f"\n        keepalive 64;\n        keepalive_timeout {UPSTREAM_KEEPALIVE_S}s;"
                      "\n    }")
    tmp = workdir / "tmp"
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""# generated by course_helpers.deploy.nginx
{user}worker_processes {worker_processes};
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    client_max_body_size 2m;
{log_format}{chr(10).join(blocks)}
{split_block}    server {{
        listen 127.0.0.1:{port};
        location = /lb-health {{ return 200 "ok\\n"; }}{mirror_location}
        location / {{
            proxy_pass http://{target};{mirror_lines}{variant_header}{log_line}
            add_header X-Upstream $upstream_addr always;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Request-ID $request_id;
            # a request that found a dead or restarting replica goes to the next one
            # (predictions are pure functions of the input, so a retried POST is safe)
            proxy_next_upstream error timeout http_502 http_503 non_idempotent;
            proxy_next_upstream_tries 3;
            proxy_connect_timeout 2s;  # a dead replica refuses at once; this is for a hung one
            proxy_read_timeout 60s;
        }}
    }}{relay_server}
}}
"""


class LoadBalancer:
    """An nginx process in front of upstreams: ``start``, ``update`` (reload), ``stop``."""

    def __init__(self, name: str = "lb", port: int | None = None) -> None:
        self.name = name
        self.port = port or free_port()
        self.relay_port: int | None = None  # the mirror relay's, chosen at its first use
        self.workdir = config.workspace_dir("nginx", name)
        self.conf = self.workdir / "nginx.conf"
        self.url = f"http://127.0.0.1:{self.port}"
        self.upstreams: list[Upstream] = []
        #: a file for one :data:`TIMING_LOG_FORMAT` line per client request (set before
        #: ``start``/``update``; None: no access log)
        self.access_log: Path | None = None

    def _write(self, upstreams: list[Upstream], default: str | None,
               split: Split | None = None, mirror: str | None = None,
               mirror_relay: bool = True) -> None:
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.workdir / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        if mirror and mirror_relay and self.relay_port is None:
            self.relay_port = free_port()
        self.conf.write_text(render_config(
            self.workdir, self.port, upstreams, default, split=split, mirror=mirror,
            relay_port=self.relay_port if mirror and mirror_relay else None,
            access_log=self.access_log))
        self.upstreams = upstreams
        out = subprocess.run([self._bin(), "-t", "-p", str(self.workdir), "-c", str(self.conf),
                              "-e", str(self.workdir / "error.log")],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise CourseError(f"nginx rejected the generated config: "
                              f"{out.stderr.strip().splitlines()[-1]}")

    @staticmethod
    def _bin() -> str:
        path = config.find_binary("nginx")
        if not path:
            raise CourseError("`nginx` was not found on PATH: install it from the Debian "
                              "package `nginx` (sudo apt-get install nginx).")
        return path

    def start(self, upstreams: list[Upstream], default: str | None = None,
              split: Split | None = None, mirror: str | None = None,
              mirror_relay: bool = True) -> "LoadBalancer":
        """Write the config and start nginx; ``split`` and ``mirror`` as in
        :func:`render_config`, ``mirror_relay`` False mirrors without the relay."""
        self._write(upstreams, default, split, mirror, mirror_relay)
        Supervisor().start(self.name, [self._bin(), "-p", str(self.workdir), "-c", str(self.conf),
                                       "-e", str(self.workdir / "error.log")],
                           url=f"{self.url}/lb-health", port=self.port, timeout=15)
        return self

    def update(self, upstreams: list[Upstream], default: str | None = None,
               split: Split | None = None, mirror: str | None = None,
               mirror_relay: bool = True) -> None:
        """Write the new config and reload it (SIGHUP): no dropped new connections."""
        self._write(upstreams, default, split, mirror, mirror_relay)
        rec = Supervisor().get(self.name)
        if rec is None or not rec.is_alive():
            raise CourseError(f"load balancer {self.name} is not running: start it first")
        os.kill(rec.pid, signal.SIGHUP)
        time.sleep(0.3)  # old workers finish, new ones take over

    def stop(self) -> None:
        """Graceful stop (SIGQUIT to the master), then make sure it is gone."""
        rec = Supervisor().get(self.name)
        if rec is not None and rec.is_alive():
            try:
                os.kill(rec.pid, signal.SIGQUIT)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 5
            while rec.is_alive() and time.monotonic() < deadline:
                time.sleep(0.05)
        Supervisor().stop(self.name)
