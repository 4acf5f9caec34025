"""Jitted train steps, early stopping and many-seed vmapped fits."""

from jaxprune._losses import LossFn, get_loss
from jaxprune._straight_through import minimal_penalty
from jaxprune.training._checkpoint import CheckpointError, Checkpoints
from jaxprune.training._core import TrainState
from jaxprune.training._cpu_rewrite import cpu_rewrite
from jaxprune.training._early_stopping import (
    EarlyStoppingState,
    early_stopping_init,
    early_stopping_update,
)
from jaxprune.training._epochs import EpochsResult, train_epochs
from jaxprune.training._fit import FitResult, RunState, fit
from jaxprune.training._freeze_state import set_frozen_units
from jaxprune.training._parallel import (
    data_mesh,
    make_parallel_epoch,
    make_parallel_train_step,
    process_slice,
    replicate,
    shard_batch,
    train_state,
)
from jaxprune.training._reinit_loop import (
    REVERT_THRESHOLD,
    ReinitResult,
    pruned_model,
    train_with_reinit,
)
from jaxprune.training._rounds import (
    L2_FORMS,
    METHODS,
    RoundsResult,
    l2_penalty,
    lw_schedule,
    train_rounds,
)
from jaxprune.training._shuffle import feistel_permutation
from jaxprune.training._step import evaluate, make_epoch, make_train_step

__all__ = [
    "CheckpointError",
    "Checkpoints",
    "EarlyStoppingState",
    "EpochsResult",
    "FitResult",
    "L2_FORMS",
    "LossFn",
    "METHODS",
    "REVERT_THRESHOLD",
    "ReinitResult",
    "RoundsResult",
    "RunState",
    "TrainState",
    "cpu_rewrite",
    "data_mesh",
    "early_stopping_init",
    "early_stopping_update",
    "evaluate",
    "feistel_permutation",
    "fit",
    "get_loss",
    "l2_penalty",
    "lw_schedule",
    "make_epoch",
    "make_parallel_epoch",
    "make_parallel_train_step",
    "make_train_step",
    "minimal_penalty",
    "process_slice",
    "pruned_model",
    "replicate",
    "set_frozen_units",
    "shard_batch",
    "train_epochs",
    "train_rounds",
    "train_state",
    "train_with_reinit",
]
