"""The session's document bus: the RunEngine publishes each document once; every consumer gets it, in order.

Why one bus (issue 12): the storage writer and the live analysis are consumers of the same ordered stream of
documents. The bus is the RunEngine's one storage/analysis subscription; it numbers every document (``seq``) and
hands it, under one lock, to each attached consumer in attachment order. A consumer is any ``callable(name, doc)``
that only enqueues (``CatalogWriter``, ``LiveAnalysis``: each then ships its queue to its own process,
`hotstage.analysis.consumer.ConsumerProcess`). Documents a consumer produces (the analysis's derived run) are
published back onto the bus with ``derived=True`` (`derived_sink`) and reach the consumers attached with
``derived=True`` (the writer) but not the analysis itself (it would analyse its own output).

Why an in-process fan-out over pipes and not bluesky's 0MQ ``Publisher``/``RemoteDispatcher``: 0MQ PUB/SUB drops
messages for a slow joiner or above the high-water mark and has no acknowledgement, while storage must be exactly
once and survive a writer crash (spool, acks, re-send: `hotstage.acquisition.storage.writer`). A 0MQ or Kafka
bridge attaches as one more consumer: ``bus.attach(bridge, derived=True)`` where ``bridge(name, doc)`` enqueues and a
thread (or its own process, like the writer) publishes (``bluesky.callbacks.zmq.Publisher``,
``bluesky_kafka.Publisher``); losses there never touch the catalog.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["DocumentBus"]

Consumer = Callable[[str, dict], Any]


class DocumentBus:
    """One ordered, numbered document stream fanned out to consumers (module docstring)."""

    def __init__(self) -> None:
        """An empty bus; ``seq`` counts the documents published so far."""
        self._lock = threading.Lock()
        self._consumers: list[tuple[Consumer, bool]] = []
        self.seq = 0
        """Number of the last document published (raw and derived)."""

    def attach(self, consumer: Consumer, *, derived: bool = True) -> None:
        """Add a consumer; ``derived=False``: it gets only the RunEngine's (raw) documents."""
        with self._lock:
            self._consumers.append((consumer, derived))

    def detach(self, consumer: Consumer) -> None:
        """Remove a consumer (it gets nothing published afterwards)."""
        with self._lock:
            self._consumers = [(c, d) for c, d in self._consumers if c is not consumer]

    def publish(self, name: str, doc: dict, *, derived: bool = False) -> None:
        """Number the document and hand it to every consumer that takes it, in order, one document at a time.

        Every consumer gets the document even if an earlier one raised; the first exception (``StorageError``:
        acquired data cannot be kept) is raised afterwards, into the RunEngine, which stops the plan.
        """
        error: BaseException | None = None
        with self._lock:
            self.seq += 1
            for consumer, takes_derived in self._consumers:
                if derived and not takes_derived:
                    continue
                try:
                    consumer(name, doc)
                except Exception as exc:  # noqa: BLE001 - delivered to the others first, then raised
                    error = error or exc
        if error is not None:
            raise error

    def __call__(self, name: str, doc: dict) -> None:
        """RunEngine subscriber: publish a raw document."""
        self.publish(name, doc)

    def derived_sink(self, name: str, doc: dict) -> None:
        """Sink for a consumer's own documents (the analysis's derived run): published with ``derived=True``."""
        self.publish(name, doc, derived=True)
