"""The scikit-learn estimator protocol, written out for bptt's estimators.

scikit-learn is never imported here. ``EstimatorProtocol`` gives an estimator
get_params / set_params from the keyword-only arguments of its ``__init__``, a repr
of the hyper-parameters that differ from their defaults, ``__sklearn_is_fitted__``
(fitted: the attribute ``model_`` is set) and ``__sklearn_tags__``. The only
scikit-learn objects used are built on demand when scikit-learn itself is already
loaded: the Tags of ``__sklearn_tags__`` (which only scikit-learn calls), and
NotFittedError / DataConversionWarning, which then also derive from scikit-learn's
classes of the same name so that its code catches them.
"""
from __future__ import annotations

import inspect
import sys

__all__ = ["DataConversionWarning", "EstimatorProtocol", "NotFittedError"]


class NotFittedError(ValueError, AttributeError):
    """predict, predict_proba or score called before fit.

    A ValueError and an AttributeError, like scikit-learn's; when scikit-learn is
    loaded the raised exception is also an instance of sklearn.exceptions.NotFittedError.
    """

    def __reduce__(self):
        return (not_fitted_error, self.args)


class DataConversionWarning(UserWarning):
    """The data were reshaped to what the estimator expects (a column-vector y)."""


_WITH_SKLEARN_BASE: dict[type, type] = {}


def with_sklearn_base(cls: type) -> type:
    """cls, or, when scikit-learn is already imported, a subclass of both cls and
    sklearn.exceptions' class of the same name. Never imports scikit-learn itself:
    code that catches or filters scikit-learn's class has imported it already."""
    if "sklearn" not in sys.modules:
        return cls
    if cls not in _WITH_SKLEARN_BASE:
        try:
            from sklearn import exceptions
            base = getattr(exceptions, cls.__name__)
        except (ImportError, AttributeError):
            return cls
        _WITH_SKLEARN_BASE[cls] = type(cls.__name__, (cls, base),
                                       {"__module__": cls.__module__, "__doc__": cls.__doc__})
    return _WITH_SKLEARN_BASE[cls]


def not_fitted_error(*args) -> NotFittedError:
    """A NotFittedError (scikit-learn's too when it is loaded) with these args."""
    return with_sklearn_base(NotFittedError)(*args)


def _same(a, b) -> bool:
    try:
        return a is b or (type(a) is type(b) and bool(a == b))
    except (TypeError, ValueError):
        return False


class EstimatorProtocol:
    """get_params, set_params, repr, fitted state and tags of a scikit-learn
    estimator whose hyper-parameters are the keyword-only arguments of __init__,
    stored under their names. _estimator_type: "classifier" or "regressor"."""

    _estimator_type: str = ""

    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return sorted(p.name for p in signature.parameters.values()
                      if p.name != "self" and p.kind == p.KEYWORD_ONLY)

    def get_params(self, deep: bool = True) -> dict:
        """The hyper-parameters by name (deep is accepted for scikit-learn; there are
        no nested estimators)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params):
        """Set hyper-parameters by name (checked when fit runs); returns self."""
        valid = self._param_names()
        for name in params:
            if name not in valid:
                raise ValueError(f"Invalid parameter {name!r} for estimator "
                                 f"{type(self).__name__}. Valid parameters are: {valid}.")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {p.name: p.default
                    for p in inspect.signature(type(self).__init__).parameters.values()}
        changed = [f"{k}={v!r}" for k, v in self.get_params().items()
                   if not _same(v, defaults.get(k))]
        return f"{type(self).__name__}({', '.join(changed)})"

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")

    def _check_fitted(self) -> None:
        """Raise NotFittedError before fit."""
        if not hasattr(self, "model_"):
            raise not_fitted_error(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                f"appropriate arguments before using this estimator.")

    def __sklearn_tags__(self):
        # Only scikit-learn calls this, so scikit-learn is loaded by then.
        from sklearn.utils import (ClassifierTags, InputTags, RegressorTags, Tags,
                                   TargetTags)
        regressor = self._estimator_type == "regressor"
        return Tags(
            estimator_type=self._estimator_type,
            target_tags=TargetTags(required=True, multi_output=regressor,
                                   single_output=True),
            classifier_tags=None if regressor else ClassifierTags(),
            regressor_tags=RegressorTags() if regressor else None,
            input_tags=InputTags(two_d_array=True, three_d_array=True))
