"""The named, ready-made models: each module builds its models from the adapters and registers
them by name (``demo-cnn``, ``cub200-clip-zeroshot``, ``birds525-dinov2`` ...) at import.

:data:`app.models.registry.ADAPTER_MODULES` lists the modules to import; which model the page
selects first is :data:`app.models.registry.DEFAULT_MODELS`, not the order of registration.
"""
