"""``--backend ray``: each trial is a Ray task with its own resources; Optuna's storage is shared.

The sweep process keeps the study (it asks the sampler and records every outcome, as with
``--backend local``); a Ray task trains one trial and reports its epochs to the same storage,
so the pruner compares trials wherever they run. At most as many trials are in flight as the
cluster has room for (``--trial-cpus``/``--trial-gpus`` each), so the sampler learns from every
finished trial before it proposes the next. Imported only with ``--backend ray``.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

from visionkit_core.errors import UsageError


def _capacity(resources: dict[str, float], cpus: float, gpus: float) -> int:
    fits = [resources.get("CPU", 0.0) / cpus] if cpus > 0 else []
    if gpus > 0:
        fits.append(resources.get("GPU", 0.0) / gpus)
    return max(math.floor(min(fits)) if fits else 1, 0)


def check_reachable(address: str | None) -> None:
    """A ``host:port`` no Ray cluster answers at is a usage error now (``ray.init`` would retry forever)."""
    import socket

    if not address or address in ("auto", "local") or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise UsageError(f"--address {address!r}: expected HOST:PORT of a Ray head node, e.g. 127.0.0.1:6379")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as err:
        raise UsageError(
            f"--address {address}: no Ray cluster answers there ({err.strerror or err}); "
            "start one with `ray start --head`, or drop --address for a local Ray"
        ) from None


def run_on_ray(sweep: Any, address: str | None, cpus: float, gpus: float) -> None:
    """Run the sweep's remaining trials as Ray tasks on the cluster at ``address`` (None: a local one)."""
    import ray

    from visionkit_sweep.trial import remote_trial

    if sweep.storage_url.startswith("sqlite") and address not in (None, "local"):
        sweep.echo(
            "visionkit: the study is an SQLite file; every Ray node must see it at the same path "
            "(one machine or a shared file system); --storage postgresql://... avoids that"
        )
    try:
        # trial logs stay in the workers' log files: each outcome is one line here
        ray.init(address=address, logging_level="WARNING", include_dashboard=False, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as err:
        raise UsageError(f"--address {address}: cannot connect to a Ray cluster: {err}") from None
    try:
        capacity = _capacity(ray.cluster_resources(), cpus, gpus)
        if capacity < 1:
            raise UsageError(
                f"no Ray node has room for one trial (--trial-cpus {cpus:g}, --trial-gpus {gpus:g}); "
                f"the cluster has {ray.cluster_resources()}"
            )
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(remote_trial)
        sweep.echo(f"visionkit: Ray cluster with room for {capacity} trial(s) at once")
        in_flight: dict[Any, Any] = {}
        while True:
            while len(in_flight) < capacity and sweep.remaining(len(in_flight)) > 0:
                trial, spec = sweep.ask()
                ref = task.remote(spec, sweep.storage_url, sweep.state["study_name"], sweep.pruner_spec())
                in_flight[ref] = trial
            if not in_flight:
                break
            done, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in done:
                trial = in_flight.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayError as err:  # the worker died (out of memory, node lost)
                    reason = " ".join(str(err).split())[:300]
                    outcome = {"state": "fail", "value": None, "reason": f"Ray task failed: {reason}"}
                sweep.record(trial, outcome)
    except KeyboardInterrupt:
        for ref, trial in in_flight.items():
            with contextlib.suppress(Exception):  # what is not recorded, --resume finds orphaned
                ray.cancel(ref, force=True)
                sweep.record(trial, {"state": "interrupted", "reason": "interrupted"})
        raise
    finally:
        ray.shutdown()
