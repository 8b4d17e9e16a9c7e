"""Training: optimiser and schedule, train state, jitted steps, the loop, metrics and evaluation."""

from gca_jax.training.loop import RunOptions, Trainer, TrainResult, train
from gca_jax.training.optimizer import lr_schedule, make_optimizer
from gca_jax.training.state import ModelDef, TrainState, abstract_state, init_state
from gca_jax.training.step import make_eval_step, make_train_step

__all__ = [
    "ModelDef",
    "RunOptions",
    "TrainResult",
    "TrainState",
    "Trainer",
    "abstract_state",
    "init_state",
    "lr_schedule",
    "make_eval_step",
    "make_optimizer",
    "make_train_step",
    "train",
]
