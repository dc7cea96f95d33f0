"""``python -m app``: launch the Finer-CAM Studio web app (Gradio) on 127.0.0.1:7860.

Flags override the environment (see ``app.config`` for the ``FINERCAM_*`` variables):

    --host       FINERCAM_HOST, GRADIO_SERVER_NAME    (127.0.0.1; 0.0.0.0 in the Docker image)
    --port       FINERCAM_PORT, GRADIO_SERVER_PORT    (7860)
    --share      FINERCAM_SHARE=1                      (off: no public gradio.live link)
    --models     FINERCAM_MODELS  comma-separated registry names (all registered)
    --device     FINERCAM_DEVICE  auto | cpu | cuda | cuda:N  (auto = CUDA when present)
    --offline    FINERCAM_OFFLINE=1  only the shipped demo models, never the Hub
    --concurrency FINERCAM_CONCURRENCY  explanations run at once (2)
    --preload    FINERCAM_PRELOAD=1  load the default models before serving

``python app/__main__.py`` works too: it is the ``app_file`` of the Hugging Face Space (the
Gradio SDK runs ``python app/__main__.py`` from the repository root). On ZeroGPU
(``SPACES_ZERO_GPU`` set) ``spaces`` is imported first, as ZeroGPU requires, and
``spaces.GPU`` wraps each explanation (``app.ui.tab_glue.gpu``).
"""

from __future__ import annotations

import os
import sys

if os.environ.get("SPACES_ZERO_GPU"):
    import spaces  # noqa: F401 - must come before torch on ZeroGPU (preinstalled there)

if not __package__:  # run as a file: make the repository root importable, not app/ itself
    from pathlib import Path

    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

import argparse
import dataclasses
import logging


def _env_flag(*names: str) -> bool:
    return any(os.environ.get(n, "").strip().lower() in {"1", "true", "yes", "on"} for n in names)


def _env(*names: str, default: str) -> str:
    for name in names:
        if os.environ.get(name):
            return os.environ[name]
    return default


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m app",
        description="Finer-CAM Studio: CAM and Finer-CAM side by side in a Gradio web app.",
    )
    parser.add_argument(
        "--host",
        default=_env("FINERCAM_HOST", "GRADIO_SERVER_NAME", default="127.0.0.1"),
        help="interface to listen on (default %(default)s; 0.0.0.0 to expose it)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(_env("FINERCAM_PORT", "GRADIO_SERVER_PORT", default="7860")),
        help="port (default %(default)s)",
    )
    parser.add_argument(
        "--share",
        action=argparse.BooleanOptionalAction,
        default=_env_flag("FINERCAM_SHARE"),
        help="create a public gradio.live link",
    )
    parser.add_argument(
        "--models",
        default=None,
        help="comma-separated model names to offer (default: all; see --list-models)",
    )
    parser.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument(
        "--offline",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="only the shipped offline demo models; never contact the Hub",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="explanations computed at once (default: FINERCAM_CONCURRENCY or 2)",
    )
    parser.add_argument(
        "--preload",
        action=argparse.BooleanOptionalAction,
        default=_env_flag("FINERCAM_PRELOAD"),
        help="load the first model of each tab before serving",
    )
    parser.add_argument(
        "--list-models", action="store_true", help="print the registered models and exit"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from app.allocator import limit_malloc_arenas

    limit_malloc_arenas()  # before torch and the server start their threads
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

    from app.config import Settings
    from app.models.registry import ModelRegistry, model_specs

    settings = Settings.from_env()
    overrides: dict[str, object] = {}
    if args.models is not None:
        overrides["models"] = tuple(m.strip() for m in args.models.split(",") if m.strip())
    if args.device is not None:
        overrides["device"] = args.device
    if args.offline is not None:
        overrides["offline"] = args.offline
    settings = dataclasses.replace(settings, **overrides)  # type: ignore[arg-type]

    if args.list_models:
        for spec in model_specs():
            where = "offline" if spec.offline else f"Hub (fallback: {spec.fallback or 'none'})"
            print(f"{spec.name:24s} {spec.task:10s} {where:32s} {spec.summary}")
        return

    try:
        device = settings.torch_device
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    registry = ModelRegistry(settings)
    known = {spec.name for spec in model_specs()}
    unknown = [m for m in settings.models if m not in known]
    if unknown:
        raise SystemExit(
            f"error: unknown model(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
        )
    if not registry.names("classifier") and not registry.names("concepts"):
        raise SystemExit("error: no models to offer with these --models/--offline settings")

    from app.ui import build_app, create_service, serve

    if args.preload:
        for task in ("classifier", "concepts"):
            names = registry.names(task)  # type: ignore[arg-type]
            if names:
                try:
                    registry.get(names[0])
                except Exception as error:  # noqa: BLE001 - the UI reports it again on use
                    logging.getLogger("app").warning("could not preload %s: %s", names[0], error)
    from app.diagnostics import start_from_env

    start_from_env()  # after the imports and preloads: traces what serving allocates
    service = create_service(registry, settings)
    demo = build_app(service, registry, settings, concurrency=args.concurrency)
    logging.getLogger("app").info(
        "serving on http://%s:%d (device %s)", args.host, args.port, device
    )
    serve(demo, host=args.host, port=args.port, share=args.share, registry=registry)


if __name__ == "__main__":
    main()
