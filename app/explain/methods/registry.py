"""The one registry of CAM methods: name -> method object, in registration order.

The UI's method dropdown, the API's accepted values and the CLI's ``--method`` help are all
read from here, so a method registered once is offered everywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.explain.inputs import InvalidInputError
from app.explain.methods.base import CamMethod

if TYPE_CHECKING:
    from app.models.base import ExplainableModel

METHODS: dict[str, CamMethod] = {}


def register(method: CamMethod) -> CamMethod:
    """Add ``method`` under its name (after those registered before); ValueError on a clash."""
    key = method.name.strip().lower()
    if key != method.name:
        raise ValueError(f"method names are lower-case without spaces, got {method.name!r}")
    if key in METHODS and METHODS[key] is not method:
        raise ValueError(f"a method named {key!r} is already registered")
    METHODS[key] = method
    return method


def unregister(name: str) -> None:
    """Remove a method (tests that register a toy one clean up with this)."""
    METHODS.pop(name, None)


def get_method(name: str) -> CamMethod:
    """Look a method up by name (case-insensitive); InvalidInputError listing the valid names."""
    key = str(name).strip().lower()
    if key not in METHODS:
        raise InvalidInputError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[key]


def available_methods(model: ExplainableModel) -> list[CamMethod]:
    """The methods that run on ``model``, in registration order."""
    return [method for method in METHODS.values() if method.supports(model)]


def methods_help() -> str:
    """``name: help`` of every method, for the CLI's ``--method`` help."""
    return "; ".join(f"{m.name}: {m.help}" for m in METHODS.values())
