"""The code part of the model fingerprint: every method of the user's and aprkit's classes and the helpers they call.

A review found cached results served after an edit that only ``forward`` was hashed for: a class's other method
(``features``), a module-level helper, and any aprkit model code (aprkit's classes were not hashed at all)."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import torch
from torch import nn

from aprkit.eval.engine.fingerprint import _class_code, model_fingerprint
from aprkit.models import SmallCNN

_SOURCE = '''
import torch
from torch import nn

SCALE = 2.0


def helper(x):
    return x * {factor}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def features(self, x):
        return {features}

    def forward(self, x):
        return self.fc(self.features(x))
'''


def _net(factor: str = "1.0", features: str = "helper(x)", name: str = "usernet_fp") -> nn.Module:
    """A user's model from its own module, built from ``_SOURCE`` (the same weights every time)."""
    mod = types.ModuleType(name)
    sys.modules[name] = mod
    try:
        exec(compile(_SOURCE.format(factor=factor, features=features), f"<{name}>", "exec"), mod.__dict__)
        torch.manual_seed(0)
        return mod.Net().eval()
    finally:
        del sys.modules[name]


def test_an_edited_method_or_helper_of_the_users_class_changes_the_fingerprint():
    base = model_fingerprint(_net())
    assert model_fingerprint(_net()) == base  # the same code: the same key
    assert model_fingerprint(_net(features="helper(x) + 1")) != base  # another ``features``, ``forward`` unchanged
    assert model_fingerprint(_net(factor="3.0")) != base  # another module-level helper


def test_aprkit_model_code_is_part_of_the_fingerprint(monkeypatch):
    torch.manual_seed(0)
    m = SmallCNN(num_classes=10).eval()
    before = model_fingerprint(m, reuse=False)
    old = SmallCNN.forward_head

    def forward_head(self, x):  # an upgrade that changes the head
        return old(self, x) * 2

    monkeypatch.setattr(SmallCNN, "forward_head", forward_head)
    assert model_fingerprint(m, reuse=False) != before


def test_classes_of_torch_are_keyed_by_their_structure_not_their_code():
    assert _class_code(nn.Conv2d) is None and _class_code(nn.Sequential) is None
    assert _class_code(SmallCNN) is not None


def test_the_code_hash_is_the_same_in_another_process():
    """Ranks of a ``torchrun`` run and a resumed run compute the key afresh: no addresses, no set order."""
    script = ("import torch; from aprkit.models import create_model; "
              "from aprkit.eval.engine.fingerprint import _class_code; "
              "print(_class_code(type(create_model('phase_collapse_cifar', num_classes=10))))")
    from aprkit.models import create_model

    here = _class_code(type(create_model("phase_collapse_cifar", num_classes=10)))
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == here
