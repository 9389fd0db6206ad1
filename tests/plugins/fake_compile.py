"""Test plugin: ``torch.compile`` traces with dynamo (the real wrapper) but runs a backend chosen by the test.

Inductor needs minutes per tiny pipeline on a 2-core CPU, so the tests swap the backend: ``passthrough`` runs the
traced graph as is, ``perturbing`` adds 0.5 to every graph's first output (a miscompiled denoiser, fault injection),
``failing`` raises as a missing C++ compiler would. As a ``-p`` plugin it applies ``$QF_TEST_COMPILE_BACKEND``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import torch

REAL_COMPILE = torch.compile


def passthrough(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
    return gm.forward


def perturbing(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
    def run(*args: Any) -> Any:
        outs = gm.forward(*args)
        if isinstance(outs, (tuple, list)) and outs and isinstance(outs[0], torch.Tensor):
            return type(outs)([outs[0] + 0.5, *outs[1:]])
        return outs

    return run


def failing(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
    raise RuntimeError("no C++ compiler found (injected by tests/plugins/fake_compile.py)")


BACKENDS: dict[str, Callable[..., Any]] = {"passthrough": passthrough, "perturbing": perturbing, "failing": failing}


def compile_with(name: str) -> Callable[..., Any]:
    """A ``torch.compile`` stand-in that keeps dynamo but uses backend ``name``."""
    torch._dynamo.reset()  # compiled code of an earlier backend must not be reused
    return functools.partial(REAL_COMPILE, backend=BACKENDS[name])


def pytest_configure(config: Any) -> None:
    torch.compile = compile_with(os.environ["QF_TEST_COMPILE_BACKEND"])
