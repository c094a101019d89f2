"""Ports: a busy port is refused before anything serves, HAProxy's own ports are picked free."""

from __future__ import annotations

import os
import socket
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import orchestrator.ray_runtime as ray_runtime
from base.errors import StrataError
from base.location import RegistryLocation
from base.ports import ensure_port_free, free_ports
from orchestrator.haproxy_loopback import BINARY_ENV
from orchestrator.ray_runtime import HAPROXY_PORT_ENVS
from tests.workers.serving.serving_support import free_port
from workers.serving import ServeOptions, run_app


@pytest.fixture
def listener() -> Iterator[int]:
    """A port listened on as Serve's proxies listen: SO_REUSEADDR and SO_REUSEPORT set."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "localhost"])
def test_a_port_someone_listens_on_is_refused(listener: int, host: str) -> None:
    with pytest.raises(StrataError, match=f"port {listener} on {host} is already in use"):
        ensure_port_free(host, listener)


def test_a_free_port_passes_and_stays_free() -> None:
    port = free_port()
    ensure_port_free("127.0.0.1", port)
    ensure_port_free("127.0.0.1", port)  # the probe let it go again


def test_hosts_that_do_not_resolve_and_impossible_ports_are_user_errors() -> None:
    with pytest.raises(StrataError, match="cannot serve on host"):
        ensure_port_free("no-such-host.invalid", 8000)
    for port in (0, 70000):
        with pytest.raises(StrataError, match="1..65535"):
            ensure_port_free("127.0.0.1", port)


def test_run_app_refuses_a_busy_port_before_serve_starts(
    served_location: RegistryLocation, listener: int
) -> None:
    """A second ``strata serve`` on the same port: refused, not quietly sharing the traffic."""
    with pytest.raises(StrataError, match="already in use"):
        run_app(served_location, ServeOptions(port=listener))


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(2)
    assert len(set(ports)) == 2
    for port in ports:
        ensure_port_free("0.0.0.0", port)


class _FakeRay:
    """``ray`` as ``connect`` uses it: records the environment the instance would inherit."""

    def __init__(self) -> None:
        self.environments: list[dict[str, str]] = []

    def is_initialized(self) -> bool:
        return False

    def init(self, **kwargs: object) -> None:
        self.environments.append(dict(os.environ))


@pytest.fixture
def fake_ray(monkeypatch: pytest.MonkeyPatch) -> _FakeRay:
    fake = _FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    for name in [*ray_runtime.HAPROXY_ENV, *ray_runtime.SERVE_ENV, *HAPROXY_PORT_ENVS,
                 *ray_runtime.HAPROXY_FILE_ENVS, BINARY_ENV, "RAY_ADDRESS"]:  # fmt: skip
        monkeypatch.delenv(name, raising=False)  # restored after the test
    return fake


def test_haproxy_stats_and_metrics_ports_are_picked_free(fake_ray: _FakeRay) -> None:
    """Not HAProxy's fixed 8404 / 9101, which two servers on one machine would share."""
    ray_runtime.connect(haproxy=True)
    environment = fake_ray.environments[0]
    ports = [int(environment[name]) for name in HAPROXY_PORT_ENVS]
    assert len(set(ports)) == 2 and not {8404, 9101} & set(ports)
    for port in ports:
        ensure_port_free("0.0.0.0", port)
    assert environment["RAY_SERVE_ENABLE_HA_PROXY"] == "1"


def test_haproxys_admin_socket_lies_in_a_private_directory(fake_ray: _FakeRay) -> None:
    """Not /tmp/haproxy-serve, which every local user can enter (the socket is mode 666)."""
    ray_runtime.connect(haproxy=True)
    environment = fake_ray.environments[0]
    root = Path(environment["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"])
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    for name in ray_runtime.HAPROXY_FILE_ENVS:
        assert Path(environment[name]).is_relative_to(root), name
    assert Path(environment["RAY_SERVE_HAPROXY_SOCKET_PATH"]).name == "admin.sock"


def test_haproxy_runs_through_the_loopback_wrapper(fake_ray: _FakeRay) -> None:
    """Serve's template binds stats and metrics on every interface; the wrapper does not."""
    ray_runtime.connect(haproxy=True)
    environment = fake_ray.environments[0]
    wrapper = Path(environment[BINARY_ENV])
    assert wrapper.parent == Path(environment["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"])
    assert wrapper.is_absolute() and os.access(wrapper, os.X_OK)
    assert "orchestrator.haproxy_loopback" in wrapper.read_text()


def test_a_missing_haproxy_binary_is_one_clear_error(
    fake_ray: _FakeRay, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(BINARY_ENV, str(tmp_path / "haproxy"))
    with pytest.raises(StrataError, match="--no-haproxy"):
        ray_runtime.connect(haproxy=True)
    assert not fake_ray.environments


def test_haproxy_ports_set_by_the_user_are_kept(
    fake_ray: _FakeRay, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_SERVE_HAPROXY_STATS_PORT", "18404")
    ray_runtime.connect(haproxy=True)
    assert fake_ray.environments[0]["RAY_SERVE_HAPROXY_STATS_PORT"] == "18404"


def test_without_haproxy_no_haproxy_ports_are_set(fake_ray: _FakeRay) -> None:
    ray_runtime.connect()
    assert not set(HAPROXY_PORT_ENVS) & set(fake_ray.environments[0])


def test_the_embedded_instance_runs_serve_in_throughput_mode(
    fake_ray: _FakeRay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its proxy too, not only the replicas; a setting the user made is kept."""
    ray_runtime.connect()
    assert ray_runtime.SERVE_ENV.items() <= fake_ray.environments[0].items()
    monkeypatch.setenv("RAY_SERVE_THROUGHPUT_OPTIMIZED", "0")
    fake_ray.environments.clear()
    ray_runtime.connect()
    assert fake_ray.environments[0]["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "0"
