"""What the argument parser needs, kept free of heavy imports so ``--help`` is instant."""

from __future__ import annotations

#: Localization regions: CUB ``box`` / ``parts``, synthetic birds ``discriminative`` / ``bird``.
REGIONS = ("auto", "box", "parts", "discriminative", "bird")
#: The held-out test seed of ``python -m app.train.demo_cnn`` (its ``--test-seed``).
SYNTH_TEST_SEED = 1234
#: ``--colormap`` choices: the names of ``app.explain.render.COLORMAPS`` (not imported here:
#: it loads OpenCV); jet, the paper's, first and default.
COLORMAP_NAMES = ("jet", "viridis", "inferno", "turbo")


class CliError(Exception):
    """A problem with what the user asked for (bad path, empty folder, unknown model).

    The CLI prints the message and exits with ``code`` (2, like argparse's usage errors).
    """

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code
