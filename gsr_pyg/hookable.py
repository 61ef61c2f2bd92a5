r"""Activation functions held as plain functions, turned into modules that hooks can reach.

A forward hook needs a module. In a transformer MLP
:math:`h = \phi(x W_1^\top + b_1)`, :math:`y = h W_2^\top + b_2`, the hidden units :math:`h`
(the usual place for a topographic penalty) are often the output of a *function*:
PyTorch's :class:`~torch.nn.TransformerEncoderLayer` stores ``F.relu``/``F.gelu`` in
``self.activation``, and some versions of Hugging Face's BERT/GPT-2 blocks keep a function
in ``intermediate_act_fn``/``act``. Two ways to reach the MLP's units, ``d_ff`` of them on the
last axis of a ``[B, T, d_ff]`` output:

* hook the first linear layer (``"linear1"``): the pre-activations :math:`x W_1^\top + b_1`;
* call :func:`expose_activations` once, then hook the activation module by name
  (``"layers.0.activation"``): the post-activations :math:`h`.

:func:`expose_activations` replaces every such function by an equivalent module
(``F.relu`` -> :class:`~torch.nn.ReLU`, ``F.gelu`` -> :class:`~torch.nn.GELU`, any other
callable -> :class:`FunctionModule`, which calls it unchanged), so the model computes
exactly what it computed before, bit for bit. A :class:`~torch.nn.TransformerEncoderLayer`
keeps its inference fast path: it still recognises ReLU/GELU, and PyTorch leaves the fast
path by itself whenever a hook is attached, so a hooked activation always sees its input.

Example::

    >>> layer = torch.nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
    >>> expose_activations(layer)
    ['activation']
    >>> layer.activation
    ReLU()
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from gsr_pyg._validation import closest_names, describe

__all__ = [
    "ACTIVATION_ATTRIBUTES",
    "FunctionModule",
    "expose_activation",
    "expose_activations",
]

# Attribute names under which common models keep their MLP activation: PyTorch's
# TransformerEncoderLayer/DecoderLayer ("activation"), Hugging Face BERT
# ("intermediate_act_fn"), GPT-2 ("act"), LLaMA-style MLPs ("act_fn"), BART ("activation_fn").
ACTIVATION_ATTRIBUTES = ("activation", "act", "act_fn", "activation_fn", "intermediate_act_fn")

# Functions with a module twin that computes the same thing with its default arguments.
# The twin matters beyond its name: TransformerEncoderLayer's fast path tests isinstance.
_MODULE_TWINS: tuple[tuple[Callable, type[nn.Module]], ...] = (
    (F.relu, nn.ReLU),
    (torch.relu, nn.ReLU),
    (F.gelu, nn.GELU),
    (F.silu, nn.SiLU),
    (F.tanh, nn.Tanh),
    (torch.tanh, nn.Tanh),
    (F.sigmoid, nn.Sigmoid),
    (torch.sigmoid, nn.Sigmoid),
)


class FunctionModule(nn.Module):
    r"""A module that calls ``function``: :math:`\text{forward}(x) = \text{function}(x)`.

    For activations that have no module twin (a ``functools.partial``, a lambda, a custom
    function); it holds no parameters, so ``state_dict`` is unchanged.

    Example::

        >>> m = FunctionModule(torch.nn.functional.softplus)
        >>> m(torch.zeros(2))
        tensor([0.6931, 0.6931])
        >>> m
        FunctionModule(softplus)
    """

    def __init__(self, function: Callable) -> None:
        super().__init__()
        if not callable(function):
            raise TypeError(f"function must be callable, got {describe(function)}")
        self.function = function

    def forward(self, *args, **kwargs):
        return self.function(*args, **kwargs)

    def extra_repr(self) -> str:
        return getattr(self.function, "__name__", repr(self.function))


def _as_module(function: Callable) -> nn.Module:
    for twin_of, module_type in _MODULE_TWINS:
        if function is twin_of:
            return module_type()
    return FunctionModule(function)


def _holds(module: nn.Module, name: str) -> bool:
    # instance attributes only: a method or class attribute is not a stored activation, and
    # a module set on the instance would not shadow a class attribute anyway
    return name in vars(module) or name in dict(module.named_children())


def _held(module: nn.Module, name: str, where: str):
    """The value ``module`` holds under ``name`` (instance attribute or submodule), checked."""
    children = dict(module.named_children())
    if name in children:
        return children[name]
    value = vars(module)[name]
    if not callable(value):
        raise TypeError(f"{where} must be a callable activation (a function or an "
                        f"nn.Module) to be exposed, got {describe(value)}")
    return value


def expose_activation(module: nn.Module, name: str = "activation") -> nn.Module:
    """Replace the function ``module.<name>`` by an equivalent module; return that module.

    ``F.relu``/``torch.relu`` become :class:`~torch.nn.ReLU`, ``F.gelu``
    :class:`~torch.nn.GELU` (``approximate="none"``, as ``F.gelu``'s default), ``F.silu``,
    ``tanh`` and ``sigmoid`` their modules, anything else a :class:`FunctionModule` around
    it: the outputs stay bit-for-bit the same. An activation that is already a module is
    returned as it is (calling this twice is harmless).

    Raises ``TypeError`` when ``module`` is not an ``nn.Module`` or the attribute is not
    callable, and ``ValueError`` when ``module`` holds no attribute ``name`` (the message
    suggests the names it does hold).

    Example::

        >>> mlp = torch.nn.Module()
        >>> mlp.act_fn = torch.nn.functional.gelu
        >>> expose_activation(mlp, "act_fn")
        GELU(approximate='none')
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {describe(module)}")
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {describe(name)}")
    if not _holds(module, name):
        held = [key for key in vars(module) if not key.startswith("_")]
        held += [child for child, _ in module.named_children()]
        hint = closest_names(name, held)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ValueError(f"name={name!r}: {type(module).__name__} holds no attribute {name!r}"
                         f"{extra}; its attributes are {sorted(held)}")
    value = _held(module, name, f"{type(module).__name__}.{name}")
    if isinstance(value, nn.Module):
        return value
    wrapped = _as_module(value)
    setattr(module, name, wrapped)  # nn.Module.__setattr__ registers it as a child
    return wrapped


def expose_activations(model: nn.Module,
                       names: Iterable[str] = ACTIVATION_ATTRIBUTES) -> list[str]:
    """Expose every activation of ``model`` held under one of ``names``; return their paths.

    Walks ``model.named_modules()``; wherever a module holds an attribute called one of
    ``names`` (default :data:`ACTIVATION_ATTRIBUTES`), a function is replaced as by
    :func:`expose_activation` and a module is left as it is. Returns the dotted names of all
    of them, ready for a regularizer or a capture (``"layers.0.activation"``,
    ``"encoder.layer.3.intermediate.intermediate_act_fn"``). The model's outputs are
    unchanged, bit for bit, in training and in evaluation mode.

    Raises ``ValueError`` when no module holds any of ``names`` (then hook the layer before
    the activation, e.g. ``"linear1"``, or pass the right ``names``) and ``TypeError`` when
    one of them holds something that is not callable (pass ``names`` without it).

    Example::

        >>> enc = torch.nn.TransformerEncoder(
        ...     torch.nn.TransformerEncoderLayer(8, 2, 16, activation="gelu"), 2,
        ...     enable_nested_tensor=False)
        >>> expose_activations(enc)
        ['layers.0.activation', 'layers.1.activation']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {describe(model)}")
    names = (names,) if isinstance(names, str) else tuple(names)
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"names must be a non-empty sequence of attribute names, got "
                         f"{describe(names)}")
    found = []
    # a list first: wrapping adds modules, which must not join the walk
    for path, module in list(model.named_modules()):
        if any(path == outer or path.startswith(f"{outer}.") for outer in found):
            continue  # inside an activation already found (e.g. GELUActivation.act)
        for name in names:
            if _holds(module, name):
                where = f"{path}.{name}" if path else name
                if not isinstance(_held(module, name, where), nn.Module):
                    expose_activation(module, name)
                found.append(where)
    if not found:
        raise ValueError(
            f"found no activation in {type(model).__name__}: no submodule holds an attribute "
            f"named any of {names}; pass names=(...) with the attribute that holds the MLP's "
            "activation, or hook the layer before it (e.g. 'linear1': pre-activations)"
        )
    return found
