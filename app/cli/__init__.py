"""Batch command line of Finer-CAM Studio: ``python -m app.cli explain|evaluate``.

* ``explain``: images or folders -> CAM and Finer-CAM maps (``.npy``) and overlays (``.png``).
* ``evaluate``: an ImageFolder, a ``CUB_200_2011`` folder or the synthetic birds -> per-image
  faithfulness / localization metrics (CSV), a summary table per method x {plain, Finer}, and
  a plot of every metric against γ.

Both share one :class:`~app.explain.service.ExplanationService` per run (one model pass per
image, however many methods and γ values), load images in a ``DataLoader`` with workers, skip
work that is already on disk, and list unreadable files at the end instead of stopping.
"""

from app.cli.main import main

__all__ = ["main"]
