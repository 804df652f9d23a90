"""Reaching a Dask cluster: an existing scheduler, or a local cluster started for one run."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distributed import Client


class ClusterError(Exception):
    """A cluster that cannot be reached or started (with the reason)."""


@contextmanager
def connect(
    scheduler: str | None = None, workers: int = 1, timeout: float = 10.0
) -> Iterator[Client]:
    """A client of the scheduler at ``scheduler``, or of a local cluster of ``workers`` processes.

    An address that does not answer, or a scheduler with no worker, raises
    ``ClusterError`` within ``timeout`` seconds (plus a grace second).
    """
    from distributed import Client, LocalCluster  # noqa: PLC0415  (heavy, only when used)

    if scheduler is not None:
        client = _reach(scheduler, timeout)
        with client:
            _wait_for_a_worker(client, scheduler, timeout)
            yield client
        return
    with (
        LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # a free port: never clash with another cluster
            silence_logs=logging.WARNING,
            host="127.0.0.1",
        ) as cluster,
        Client(cluster, set_as_default=False) as client,  # type: ignore[no-untyped-call]
    ):
        yield client


def _wait_for_a_worker(client: Client, scheduler: str, timeout: float) -> None:
    """Tasks sent to a scheduler without workers would wait forever: refuse instead."""
    try:
        client.wait_for_workers(1, timeout=timeout)
    except Exception as exc:  # distributed raises TimeoutError (or OSError if it went away)
        raise ClusterError(
            f"the Dask scheduler at {scheduler} has no worker (none joined within {timeout:g} s)"
        ) from exc


def _reach(scheduler: str, timeout: float) -> Client:
    """A client of ``scheduler``, or ``ClusterError`` after ``timeout`` (plus a grace second).

    Distributed's own ``timeout`` covers a refused connection, not a peer that accepts
    and never speaks (the handshake then waits forever): a thread bounds both.
    """
    from distributed import Client  # noqa: PLC0415

    box: dict[str, object] = {}

    def attempt() -> None:
        try:
            box["client"] = Client(scheduler, timeout=timeout, set_as_default=False)  # type: ignore[no-untyped-call]
        except Exception as exc:  # reported below, whatever distributed raised
            box["error"] = exc

    thread = threading.Thread(target=attempt, name="dask-connect", daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    client = box.get("client")
    if isinstance(client, Client):
        return client
    why = box.get("error", "no answer to the handshake")
    raise ClusterError(f"no Dask scheduler answered at {scheduler} within {timeout:g} s ({why})")
