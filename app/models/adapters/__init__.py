"""Adapters per library family: how a timm ViT, an open_clip model, a torchvision CNN or a
linear head on a frozen backbone becomes an :class:`~app.models.base.ExplainableModel`.

Generic code only: nothing here registers a named model (that is :mod:`app.models.zoo`) or
decides what may be downloaded (that is :mod:`app.models.hub`).
"""
