"""HAProxy's stats and metrics listeners made loopback-only in a config from Serve's template."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import jinja2
import pytest
from ray.serve._private.haproxy import HAProxyConfig, _haproxy_fmt_literal
from ray.serve._private.haproxy_templates import HAPROXY_CONFIG_TEMPLATE
from ray.serve.config import HTTPOptions

from orchestrator.haproxy_loopback import LoopbackError, loopback_config, write_loopback_copy


@pytest.fixture(scope="module")
def rendered() -> str:
    """A config as Serve writes it (no routes yet) for ``--host 0.0.0.0 --port 18000``, stats
    on 18404 and metrics on 19101."""
    http = HTTPOptions(host="0.0.0.0", port=18000)
    config = HAProxyConfig(stats_port=18404, metrics_port=19101, http_options=http)
    environment = jinja2.Environment()
    environment.filters["haproxy_fmt"] = _haproxy_fmt_literal  # as Serve renders it
    return environment.from_string(HAPROXY_CONFIG_TEMPLATE).render(
        config=config, backends=[], grpc_backends=[], backends_with_health_config=[],
        grpc_backends_with_health_config=[], route_info=[], healthz_rules="",
        grpc_healthz_rules="", has_ingress_request_router=False,
    )  # fmt: skip


def _binds(text: str) -> list[str]:
    return re.findall(r"^\s*(bind .*?)\s*$", text, re.MULTILINE)


def test_only_stats_and_metrics_binds_move_to_loopback(rendered: str) -> None:
    assert _binds(rendered) == ["bind :19101", "bind *:18000", "bind *:18404"]  # Ray's, known
    after = loopback_config(rendered)
    # The HTTP frontend's bind, from --host, is the user's choice and stays.
    assert _binds(after) == ["bind 127.0.0.1:19101", "bind *:18000", "bind 127.0.0.1:18404"]
    restored = after.replace("bind 127.0.0.1:19101", "bind :19101")
    assert restored.replace("bind 127.0.0.1:18404", "bind *:18404") == rendered  # nothing else


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("  bind *:18404\n", ""),  # a template without the stats bind
        ("    bind :19101\n", ""),  # ... without the metrics bind
        ("    bind :19101\n", "    bind :19101\n    bind :19102\n"),  # two of them
        ("  bind *:18404\n", "  bind 10.0.0.1:18404\n"),  # an address already chosen
    ],
)
def test_an_unexpected_template_is_refused(rendered: str, old: str, new: str) -> None:
    assert old in rendered
    with pytest.raises(LoopbackError):
        loopback_config(rendered.replace(old, new))


def test_the_copy_is_written_beside_the_config_privately(rendered: str, tmp_path: Path) -> None:
    config = tmp_path / "haproxy.cfg"
    config.write_text(rendered)
    copy = write_loopback_copy(config)
    assert copy == tmp_path / "haproxy.cfg.loopback"
    assert copy.read_text() == loopback_config(rendered)
    assert config.read_text() == rendered  # Serve's own file, rewritten again at each reload
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["haproxy.cfg", "haproxy.cfg.loopback"]
