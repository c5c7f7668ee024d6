"""hotstage: experiment control and live analysis for temperature-ramped in-situ measurements.

The layers install under this one namespace (``hotstage.devices``, ``hotstage.simulated``,
``hotstage.plans``, ``hotstage.analysis``, ``hotstage.acquisition``); their import rules are in
``docs/architecture.md`` and enforced by ``tests/test_layers.py``.
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hotstage")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
