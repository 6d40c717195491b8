"""Estimators whose task is fixed by their class: ``LSTMClassifier`` / ``LSTMRegressor``, ``GRUClassifier`` /
``GRURegressor``, ``RNNClassifier`` / ``RNNRegressor``.

They take the parameters of :class:`rnnfast.LSTM` (``RNN*`` also ``nonlinearity``) and differ from it
in three ways: the task does not follow ``y`` (a classifier takes float labels as classes, a regressor
takes integer targets as numbers); scikit-learn sees them as a classifier or a regressor
(``sklearn.base.is_classifier`` is true, ``cross_val_score`` stratifies, ``CalibratedClassifierCV``
works); and a 2-D float ``X`` (N, T) is N sequences of one feature per step (scikit-learn's tabular
shape), where :class:`rnnfast.LSTM` asks for ``X[..., None]``. Integer 2-D ``X`` is token ids for all.
"""
from __future__ import annotations

from typing import Optional

from rnnfast.estimators.recurrent import GRU, LSTM, RNN
from rnnfast.estimators.targets import CLASSIFICATION, REGRESSION

__all__ = ["LSTMClassifier", "LSTMRegressor", "GRUClassifier", "GRURegressor", "RNNClassifier", "RNNRegressor"]


class _Classifier:
    """Mixin: classification whatever ``y`` holds."""

    _task: Optional[str] = CLASSIFICATION
    _estimator_type: Optional[str] = "classifier"
    _two_d_input = True


class _Regressor:
    """Mixin: regression whatever ``y`` holds; no ``predict_proba``."""

    _task: Optional[str] = REGRESSION
    _estimator_type: Optional[str] = "regressor"
    _two_d_input = True

    @property
    def predict_proba(self):
        raise AttributeError(f"{type(self).__name__} is a regressor: it has no predict_proba")


class LSTMClassifier(_Classifier, LSTM):
    """LSTM sequence classifier (per sequence, or per step for (N, T) labels); see :class:`rnnfast.LSTM`
    for the parameters and attributes and :mod:`rnnfast.estimators.tasks` for how it differs."""


class LSTMRegressor(_Regressor, LSTM):
    """LSTM sequence regressor ((N,), (N, k) or per-step targets); see :class:`rnnfast.LSTM` for the
    parameters and attributes and :mod:`rnnfast.estimators.tasks` for how it differs."""


class GRUClassifier(_Classifier, GRU):
    """GRU sequence classifier; as :class:`LSTMClassifier`."""


class GRURegressor(_Regressor, GRU):
    """GRU sequence regressor; as :class:`LSTMRegressor`."""


class RNNClassifier(_Classifier, RNN):
    """Simple (Elman) RNN sequence classifier; as :class:`LSTMClassifier`, plus ``nonlinearity``."""


class RNNRegressor(_Regressor, RNN):
    """Simple (Elman) RNN sequence regressor; as :class:`LSTMRegressor`, plus ``nonlinearity``."""
