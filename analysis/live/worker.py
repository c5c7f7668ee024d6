"""The live-analysis process: ``python -m hotstage.analysis.live.worker``, one consumer of the document bus.

Started by `hotstage.analysis.live.callback.LiveAnalysis` (``process=True``) as its own interpreter through
`hotstage.analysis.consumer.ConsumerProcess`, never by ``multiprocessing``: the user's ``__main__`` is never
re-imported. First frame on stdin: ``{"params": AnalysisParameters, "mode": str, "analysers": mapping or None}``;
then ``("docs", [(name, doc), ...])`` and ``("close",)`` (or the end of stdin: the parent closed it or died). It
answers on stdout with ``("ready",)``, ``("started", raw_uid, derived_uid)``, ``("out", derived_docs, processed)``
and ``("stopped", raw_uid, info)`` (`hotstage.analysis.live.callback.analysis_main`).
"""

from __future__ import annotations

import os

from .callback import analysis_main
from ..consumer import ParentChannel, exit_done

__all__ = ["main"]


def main() -> None:
    """Take the channel, read the start-up frame, analyse until closed."""
    channel = ParentChannel()
    try:
        init = channel.recv()
        analysis_main(init["params"], init["mode"], init["analysers"], channel)
    except (BrokenPipeError, ConnectionResetError, EOFError):
        os._exit(1)  # the parent is gone (it ends the derived runs it saw, or `hotstage replay` does): quietly
    exit_done()  # every derived document is sent and the channel closed


if __name__ == "__main__":
    main()
