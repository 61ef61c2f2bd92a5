"""Checks shared by the public functions: one message style everywhere.

Public functions validate their arguments once, at the boundary, and raise ``ValueError``
(or ``TypeError`` for a wrong type) with a message that names the argument, what was
expected and what came. Inner code trusts its inputs.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import torch


def describe(value) -> str:
    """A short description of a value for error messages."""
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_tensor(value, name: str, *, ndim: int | tuple[int, ...] | None = None,
                 min_ndim: int | None = None, floating: bool = False) -> torch.Tensor:
    """Require a tensor with the given rank; return it."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {describe(value)}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if value.dim() not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise ValueError(f"{name} must be {want}, got {describe(value)}")
    if min_ndim is not None and value.dim() < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions, got {describe(value)}")
    if floating and not value.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {describe(value)}")
    return value


def check_finite(value: torch.Tensor, name: str) -> torch.Tensor:
    """Require no NaN or Inf; the message counts the bad entries."""
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        n_nan = int(torch.isnan(value).sum())
        n_inf = int(torch.isinf(value).sum())
        raise ValueError(
            f"{name} must be finite, got {n_nan} NaN and {n_inf} Inf values "
            f"in a {describe(value)}"
        )
    return value


def check_choice(value, name: str, choices: Iterable) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {describe(value)}")


def check_int(value, name: str, *, minimum: int | None = None,
              maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {describe(value)}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_bool(value, name: str) -> bool:
    """Require ``True`` or ``False`` (a string such as ``"no"`` is not taken as true)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {describe(value)}")
    return value


def check_positive(value, name: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {describe(value)}")
    value = float(value)
    ok = value >= 0 if allow_zero else value > 0
    if not ok or value != value or value == float("inf"):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value}")
    return value


def closest_names(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Candidates that look like ``name``, for 'did you mean' messages."""
    return difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.4)
