"""Fan-out of independent tasks (augmentation batches, Table 2 runs, classifier runs) over a Dask
cluster, or serially in this process when no client is given. Both paths run the same function
on the same arguments, so for the same seeds they give the same results.

Large shared objects (the generator, the oracle) are broadcast to every worker once with
``Client.scatter``; tasks then refer to the worker's copy instead of shipping or reloading it.
"""
from __future__ import annotations

import contextlib
import socket
import sys
from typing import Callable, Iterator

from tqdm.auto import tqdm

__all__ = ["SCHEMES", "connect", "describe", "close", "cluster", "fan_out"]


def _set_torch_threads(n: int) -> int:
    import torch
    torch.set_num_threads(n)
    return n


# Protocols that need no certificates or extra packages. The scheduler is trusted: Dask exchanges
# pickles with it, so connect only to a scheduler you run (docs/method.md, Scale-out).
SCHEMES = ("tcp", "inproc")


def connect(scheduler: str | None = None, workers: int = 2, threads: int = 1, timeout: float = 10.0):
    """A ``dask.distributed.Client``: of the scheduler at ``scheduler`` (e.g. ``tcp://host:8786``),
    or of a new ``LocalCluster`` of ``workers`` processes. Each worker runs one task at a time with
    ``threads`` torch threads (processes, not threads, share the cores without fighting)."""
    from dask.distributed import Client, LocalCluster
    if scheduler:
        scheme = scheduler.split("://")[0] if "://" in scheduler else "tcp"
        if scheme not in SCHEMES:
            raise ValueError(f"scheduler {scheduler!r}: the {scheme}:// protocol is not supported here; expected "
                             f"{' or '.join(s + '://host:port' for s in SCHEMES)}")
        try:
            if scheme == "tcp":  # a refused port is said at once; Dask would retry it for ``timeout``
                host, _, port = scheduler.split("://")[-1].rpartition(":")
                socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout).close()
            client = Client(scheduler, timeout=f"{timeout}s")
        except Exception as e:  # unreachable, or something that is not a Dask scheduler answering
            raise ValueError(f"scheduler {scheduler!r} is unreachable ({type(e).__name__}: {e}); expected the "
                             "address of a running Dask scheduler, such as tcp://host:8786") from None
    else:
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers={workers!r}; expected a positive integer")
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0", silence_logs=50)  # a task's error is ours to say, in one line
        client = Client(cluster)
    client.run(_set_torch_threads, threads)
    return client


def describe(client) -> str:
    """One line on a client: its workers and dashboard."""
    return f"dask: {len(client.scheduler_info()['workers'])} workers, dashboard {client.dashboard_link}"


def close(client) -> None:
    """Close a client, and the LocalCluster it started (an external scheduler keeps running)."""
    from dask.distributed import LocalCluster
    cluster = getattr(client, "cluster", None)
    client.close()
    if isinstance(cluster, LocalCluster):
        cluster.close()


@contextlib.contextmanager
def cluster(client=None, scheduler: str | None = None, workers: int = 0) -> Iterator[object]:
    """The client to fan out over: ``client`` when given; else one of ``scheduler`` or of a local
    cluster of ``workers`` processes, started here (said on stderr) and closed on leaving; else
    None (this process)."""
    if client is not None or not (scheduler or workers):
        yield client
        return
    client = connect(scheduler, workers=workers or 2)
    print(describe(client), file=sys.stderr)
    try:
        yield client
    finally:
        close(client)


def fan_out(func: Callable, tasks: list[dict], shared: dict | None = None, client=None,
            progress: bool = True, desc: str = "tasks") -> Iterator[tuple[int, object]]:
    """Yield ``(i, func(**shared, **tasks[i]))`` for every task, as each finishes (in order when
    serial). With a client, ``shared`` objects are sent to each worker once."""
    shared = dict(shared or {})
    bar = tqdm(total=len(tasks), disable=not progress, desc=desc)
    try:
        if client is None:
            for i, task in enumerate(tasks):
                yield i, func(**shared, **task)
                bar.update()
            return
        from dask.distributed import as_completed
        # A list of one: scatter would split a dict into one future per key.
        remote = {k: client.scatter([v], broadcast=True)[0] for k, v in shared.items()}
        futures = {client.submit(func, **remote, **task, pure=False): i for i, task in enumerate(tasks)}
        for future in as_completed(futures):
            yield futures[future], future.result()
            bar.update()
    finally:
        bar.close()
