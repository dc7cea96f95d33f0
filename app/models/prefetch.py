"""Download every weight a deployment needs into the caches (for the Docker image build).

    python -m app.models.prefetch                       # all registered Hub/torchvision models
    python -m app.models.prefetch --models clip-vit-b16 vgg16bn-imagenet

Each model is built once on the CPU through its normal loading code, which fills the
huggingface_hub cache (``HF_HOME``: open_clip, timm, trained heads) and the torch hub cache
(``TORCH_HOME``: torchvision). Offline demo models ship in the repository and need nothing;
``cub200-linear`` is fetched only when ``FINERCAM_CUB_HEAD`` (or ``--cub-head``) is set.
Exits non-zero, naming the models, when any download fails.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace

from app.config import Settings
from app.models.hub.downloads import hf_cache_dir, torch_cache_dir
from app.models.registry import model_specs

log = logging.getLogger("app.models.prefetch")


def default_models(settings: Settings) -> list[str]:
    """Registered models whose weights come from a hub (cub200-linear only when configured)."""
    names = []
    for spec in model_specs():
        if spec.offline or (spec.name == "cub200-linear" and not settings.cub_head):
            continue
        names.append(spec.name)
    return names


def prefetch(names: list[str], settings: Settings) -> dict[str, str]:
    """Build each model (strictly: no fallback); returns ``{name: "ok" | error message}``."""
    from app.models.registry import get_spec

    results = {}
    for name in names:
        started = time.time()
        log.info("fetching %s ...", name)
        try:
            model = get_spec(name).build(settings)
        except (OSError, RuntimeError, ValueError) as error:
            log.error("FAILED %s: %s", name, error)
            results[name] = str(error)
            continue
        log.info("ok %s in %.1fs: %s", name, time.time() - started, model.description)
        results[name] = "ok"
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.models.prefetch", description=__doc__)
    parser.add_argument(
        "--models",
        nargs="*",
        default=None,
        help="registry names (default: every model that downloads weights)",
    )
    parser.add_argument("--clip-model", default=None, help="FINERCAM_CLIP_MODEL")
    parser.add_argument("--clip-pretrained", default=None, help="FINERCAM_CLIP_PRETRAINED")
    parser.add_argument("--cub-head", default=None, help="FINERCAM_CUB_HEAD")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = replace(Settings.from_env(), device="cpu", offline=False)
    overrides = {
        key: value
        for key, value in (
            ("clip_model", args.clip_model),
            ("clip_pretrained", args.clip_pretrained),
            ("cub_head", args.cub_head),
        )
        if value is not None
    }
    settings = replace(settings, **overrides)
    names = args.models if args.models else default_models(settings)
    log.info("caches: huggingface %s, torchvision %s", hf_cache_dir(), torch_cache_dir())
    results = prefetch(names, settings)
    failed = [name for name, result in results.items() if result != "ok"]
    if failed:
        log.error("could not fetch: %s", ", ".join(failed))
        return 1
    log.info("fetched %d model(s): %s", len(results), ", ".join(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
