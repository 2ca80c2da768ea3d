"""Denoising score matching: loss, state, the data-parallel step and the resumable loop."""

from jaxlens.train.checkpoint import CheckpointError
from jaxlens.train.dsm import DSMRecipe, dsm_loss, validation_key, validation_loss
from jaxlens.train.loop import TrainOptions, train
from jaxlens.train.state import OptimizerSpec, TrainState, create_train_state, make_optimizer
from jaxlens.mesh import data_mesh
from jaxlens.train.step import make_train_step, train_step

__all__ = [
    "CheckpointError",
    "DSMRecipe",
    "OptimizerSpec",
    "TrainOptions",
    "TrainState",
    "create_train_state",
    "data_mesh",
    "dsm_loss",
    "make_optimizer",
    "make_train_step",
    "train",
    "train_step",
    "validation_key",
    "validation_loss",
]
