"""A trained lane as a stand-alone predictor (numpy in, numpy out)."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from models import network
from models.hparams import LaneHparams, Signature


@functools.partial(jax.jit, static_argnames=("sig",))
def _logits(sig: Signature, params, norm_state, hp: LaneHparams, x):
    logits, _ = network.forward(sig, params, norm_state, hp, x)
    return logits


@dataclasses.dataclass
class TrainedModel:
    """One trained network and the input/target scaling it was trained with.

    x_shift/x_scale [d]: raw features are standardised as (x - shift) / scale.
    y_shift/y_scale [k]: regression outputs are mapped back as out * scale + shift.
    """

    sig: Signature
    params: dict
    norm_state: dict
    hp: LaneHparams          # scalars: one lane
    x_shift: np.ndarray
    x_scale: np.ndarray
    y_shift: np.ndarray
    y_scale: np.ndarray

    @classmethod
    def from_fit(cls, sig, result, hp: LaneHparams, lane: int, fold: int, x_shift, x_scale,
                 y_shift, y_scale) -> "TrainedModel":
        """Pick lane ``lane``, fold ``fold`` out of a ``FitResult``."""
        take = lambda a: np.asarray(a[lane, fold])  # noqa: E731
        params = jax.tree_util.tree_map(take, result.params)
        norm_state = jax.tree_util.tree_map(take, result.norm_state)
        lane_hp = LaneHparams(*(np.asarray(v)[lane] for v in hp))
        return cls(sig, params, norm_state, lane_hp, np.asarray(x_shift, np.float32),
                   np.asarray(x_scale, np.float32), np.asarray(y_shift, np.float32),
                   np.asarray(y_scale, np.float32))

    def logits(self, X) -> np.ndarray:
        x = (np.asarray(X, np.float32) - self.x_shift) / self.x_scale
        return np.asarray(_logits(self.sig, self.params, self.norm_state, self.hp,
                                  jnp.asarray(x)))

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities [n, C] (binary: [n, 2]; multilabel: [n, k] per label)."""
        z = self.logits(X)
        task = self.sig.task
        if task == "multiclass":
            return np.asarray(jax.nn.softmax(z, axis=-1))
        if task == "binary":
            p = np.asarray(jax.nn.sigmoid(z[:, 0]))
            return np.stack([1.0 - p, p], axis=1)
        if task == "multilabel":
            return np.asarray(jax.nn.sigmoid(z))
        raise ValueError("predict_proba needs a classification task")

    def predict(self, X) -> np.ndarray:
        """Class ids [n] (multilabel: 0/1 [n, k]) or regression values [n] / [n, k]."""
        z = self.logits(X)
        task = self.sig.task
        if task == "regression":
            out = z * self.y_scale + self.y_shift
            return out[:, 0] if out.shape[1] == 1 else out
        if task == "multiclass":
            return z.argmax(axis=1)
        if task == "binary":
            return (z[:, 0] > 0).astype(np.int64)
        return (z > 0).astype(np.int64)
