"""telecli: what a network learned at each step, through the telescoping model.

Jeffares, Curth & van der Schaar (NeurIPS 2024): a trained network is its initial prediction plus one
first-order (tangent-kernel) update per training step. See README.md and docs/.
"""

__version__ = "0.1.0"

from telecli.errors import TelecliError  # noqa: E402


def __getattr__(name):  # lazy: importing telecli stays cheap for the CLI
    if name == "Recorder":
        from telecli.train.recorder import Recorder

        return Recorder
    if name == "open_results":  # labelled arrays from a results file (telecli/results.py)
        from telecli.results import open_results

        return open_results
    raise AttributeError(name)


__all__ = ["Recorder", "TelecliError", "__version__", "open_results"]
