"""Jitted train steps, early stopping, many-seed vmapped fits and reinitialization rounds."""

from jaxprune.training.early_stopping import (
    EarlyStoppingState,
    early_stopping_init,
    early_stopping_update,
)
from jaxprune.training.fit import FitResult, RunState, fit
from jaxprune.training.losses import LossFn, get_loss
from jaxprune.training.rounds import METHODS, RoundsResult, lw_schedule, train_rounds
from jaxprune.training.shuffle import feistel_permutation
from jaxprune.training.step import batch_loss, evaluate, make_train_step

__all__ = [
    "METHODS",
    "EarlyStoppingState",
    "FitResult",
    "LossFn",
    "RoundsResult",
    "RunState",
    "batch_loss",
    "early_stopping_init",
    "early_stopping_update",
    "evaluate",
    "feistel_permutation",
    "fit",
    "get_loss",
    "lw_schedule",
    "make_train_step",
    "train_rounds",
]
