"""The private transformers APIs the project relies on (:mod:`mcmdpo.compat`) are there, with
the parameters it relies on, in the installed transformers; and each entry names code that
really relies on it. Fast: nothing is built or run."""

from __future__ import annotations

import dataclasses
import importlib

import pytest

from mcmdpo import compat


@pytest.mark.parametrize("api", compat.PRIVATE_APIS, ids=lambda api: api.title())
def test_the_installed_transformers_keeps_what_we_rely_on(api):
    change = api.change()
    assert change is None, change


@pytest.mark.parametrize("api", compat.PRIVATE_APIS, ids=lambda api: api.title())
def test_each_entry_names_the_code_that_relies_on_it(api):
    module, _, name = api.where.partition(":")
    target = importlib.import_module(module)
    for part in name.split("."):
        target = getattr(target, part)
    assert api in getattr(target, "__relies_on__", ()), f"{api.where} is not marked @relies_on({api.title()})"


def test_every_entry_is_checked():
    defined = {value for value in vars(compat).values() if isinstance(value, compat.PrivateAPI)}
    assert defined == set(compat.PRIVATE_APIS)


def test_a_change_is_named_with_what_we_relied_on():
    """What a transformers upgrade that changed an API would show: the API, the parameters we
    relied on, what it has now, and where to look."""
    renamed = dataclasses.replace(compat.SAVE_CHECKPOINT, parameters=("self", "model", "trial", "metrics"))
    message = renamed.change()
    assert message is not None and "changed Trainer._save_checkpoint(self, model, trial, metrics) → (self, model, trial)" in message
    assert message.endswith("(override in mcmdpo.train.resume:CheckpointWeightsMixin._save_checkpoint: "
                            f"{compat.SAVE_CHECKPOINT.why})") and "see mcmdpo/compat.py" in message
    gone = dataclasses.replace(compat.GET_TRAIN_SAMPLER, name="_get_train_sampler_gone")
    assert "→ gone" in gone.change()
    # A call relies on the leading parameters only: trailing ones added later do not break it.
    assert dataclasses.replace(compat.ROTATE_CHECKPOINTS, parameters=("output_dir",)).change() is None
    assert compat.changes((renamed, gone, compat.GET_OUTPUT_DIR)) == [renamed.change(), gone.change()]


def test_an_override_marked_with_another_name_is_refused():
    with pytest.raises(TypeError, match="marked as overriding Trainer._save_checkpoint"):
        compat.relies_on(compat.SAVE_CHECKPOINT)(lambda self, model, trial: None)
