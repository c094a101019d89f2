"""What ``strata serve`` accepts, checked without importing Ray Serve.

The CLI checks these before Ray starts (and before Serve is imported, which must come after
the HAProxy settings are in the environment), so a typo costs no Ray start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from base import defaults
from base.errors import StrataError


@dataclass(frozen=True)
class ServeOptions:
    """What ``strata serve`` accepts; ``replica_cpus`` is the Ray CPU share per model replica."""

    host: str = "127.0.0.1"
    port: int = 8000
    min_replicas: int = 1
    max_replicas: int = 2
    max_tasks: int = 8
    target_ongoing: int = 4
    upscale_delay_s: float = 30.0  # sustained load this long adds replicas (Serve's default)
    downscale_delay_s: float = 600.0  # idle this long removes them (Serve's default)
    max_batch: int = 256
    replica_cpus: float = 0.5
    max_body_bytes: int = 64 * 2**20
    max_pixels: int = defaults.MAX_PIXELS  # one request, all its inputs together
    # Dynamic batching in the model replica: concurrent requests for one task wait at most
    # this long to share a forward of up to ``batch_images`` inputs (0 ms: one forward per
    # request, logits bit-identical to ``strata predict``; docs/serving.md).
    batch_wait_ms: float = 2.0
    batch_images: int = 256

    def validate(self) -> None:
        """StrataError naming every option out of range; run before Ray starts."""
        problems = []
        if not 0 < self.port < 65536:
            problems.append(f"--port must be in 1..65535, not {self.port}")
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            problems.append("replicas need 0 <= --min-replicas <= --max-replicas and max >= 1")
        if self.max_tasks < 1 or self.target_ongoing < 1 or self.max_batch < 1:
            problems.append("--max-tasks, --target-ongoing and --max-batch must be >= 1")
        delays = (self.upscale_delay_s, self.downscale_delay_s)
        if not all(math.isfinite(delay) and delay >= 0 for delay in delays):
            problems.append("--upscale-delay and --downscale-delay must be finite, >= 0 seconds")
        if not (math.isfinite(self.batch_wait_ms) and 0 <= self.batch_wait_ms <= 1000):
            problems.append("--batch-wait-ms must be in 0..1000")
        if self.batch_images < 1:
            problems.append("--batch-images must be >= 1")
        if self.replica_cpus <= 0 or self.max_body_bytes < 1 or self.max_pixels < 1:
            problems.append("replica CPUs, the body limit and the pixel budget must be positive")
        if problems:
            raise StrataError("; ".join(problems))

    @property
    def url(self) -> str:
        """Where clients reach the server (a wildcard host is reached through loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def batching(self) -> bool:
        """Whether model replicas batch concurrent requests (a positive wait)."""
        return self.batch_wait_ms > 0
