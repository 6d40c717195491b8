"""The scikit-learn protocol, without importing scikit-learn.

``__init__`` only stores its arguments; ``get_params`` / ``set_params`` read and write them (unknown
names are refused); everything learnt ends in ``_`` and is set by ``fit``; so ``sklearn.base.clone``,
``Pipeline`` and ``GridSearchCV`` work. ``__sklearn_tags__`` imports scikit-learn lazily: only
scikit-learn calls it.
"""
from __future__ import annotations

import functools
import inspect
import sys
from typing import Any, Optional

from rnnfast.estimators.params import jsonable

__all__ = ["NotFittedError", "EstimatorBase", "with_sklearn_twin"]


class NotFittedError(ValueError, AttributeError):
    """The estimator is used before ``fit`` (scikit-learn's exception of the same name and bases)."""


_TWINS: dict = {}


def with_sklearn_twin(ours: type, sklearn_name: str) -> type:
    """``ours``, or, when scikit-learn is already imported, a subclass of both ``ours`` and
    ``sklearn.exceptions.<sklearn_name>`` (so scikit-learn's ``except`` clauses and warning filters see
    it as theirs). scikit-learn is never imported here."""
    sk = sys.modules.get("sklearn.exceptions")
    theirs = getattr(sk, sklearn_name, None)
    if theirs is None:
        return ours
    if (ours, theirs) not in _TWINS:
        _TWINS[ours, theirs] = type(ours.__name__, (ours, theirs), {"__module__": ours.__module__,
                                                                    "__doc__": ours.__doc__})
    return _TWINS[ours, theirs]


def _same(a: Any, b: Any) -> bool:
    try:
        return a is b or (type(a) is type(b) and bool(a == b))
    except Exception:
        return False


@functools.lru_cache(maxsize=None)
def _param_names(cls: type) -> tuple:
    """The constructor's argument names (once per class: ``inspect.signature`` costs ~0.1 ms a call, which
    every ``predict`` paid)."""
    sig = inspect.signature(cls.__init__)
    return tuple(sorted(p.name for p in sig.parameters.values()
                        if p.name != "self" and p.kind == p.POSITIONAL_OR_KEYWORD))


class EstimatorBase:
    """Parameters, representation, fitted-state check and scikit-learn tags of an estimator.

    Subclasses set ``_estimator_type`` ("classifier", "regressor" or None: the task follows ``y``)
    and ``_two_d_input`` (whether a 2-D float array is valid input).
    """

    _estimator_type: Optional[str] = None
    _two_d_input = False

    @classmethod
    def _get_param_names(cls) -> list:
        return list(_param_names(cls))

    def get_params(self, deep: bool = True) -> dict:
        """The constructor arguments.

        Parameters
        ----------
        deep : bool, default True
            Accepted for scikit-learn compatibility (there are no nested estimators).

        Returns
        -------
        dict of str to object
        """
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params: Any) -> "EstimatorBase":
        """Set constructor arguments (validated when fitting).

        Returns
        -------
        self

        Raises
        ------
        ValueError
            For a name that is not a parameter of this estimator.
        """
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"Invalid parameter {name!r} for estimator {type(self).__name__}(). "
                                 f"Valid parameters are: {valid!r}.")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()
                    if p.name != "self"}
        changed = [f"{k}={jsonable(v)!r}" for k, v in self.get_params().items()
                   if not _same(v, defaults.get(k, inspect.Parameter.empty))]
        return f"{type(self).__name__}({', '.join(changed)})"

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")

    def __sklearn_tags__(self):
        """scikit-learn's tags (only scikit-learn calls this, so importing it here adds no dependency):
        the estimator type, y required (multi-output for regression), 3-D input and 2-D where taken."""
        from sklearn.utils import InputTags, Tags, TargetTags
        kind = self._estimator_type
        try:
            tags = Tags(estimator_type=kind, target_tags=TargetTags(required=True))
        except TypeError:  # releases whose Tags has no estimator_type
            tags = Tags(target_tags=TargetTags(required=True))
        if kind == "classifier":
            from sklearn.utils import ClassifierTags
            tags.classifier_tags = ClassifierTags(multi_class=True)
        elif kind == "regressor":
            from sklearn.utils import RegressorTags
            tags.regressor_tags = RegressorTags()
        tags.target_tags.multi_output = kind != "classifier"
        tags.input_tags = InputTags(two_d_array=self._two_d_input, three_d_array=True)
        tags.non_deterministic = getattr(self, "random_state", None) is None
        return tags

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            error = with_sklearn_twin(NotFittedError, "NotFittedError")
            raise error(f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with appropriate "
                        "arguments before using this estimator.")
