"""scikit-learn estimators around latentforge's autoencoders.

    >>> from latentforge.sklearn import AutoencoderTransformer, AutoencoderOutlierDetector
    >>> ae = AutoencoderTransformer("stacked-ae", coding_size=16, epochs=10, random_state=0)
    >>> codes = ae.fit_transform(X)                 # (N, 16)
    >>> X_hat = ae.inverse_transform(codes)         # shaped like X
    >>> det = AutoencoderOutlierDetector(contamination=0.05, random_state=0).fit(X_normal)
    >>> det.predict(X_new)                          # +1 inlier, -1 outlier (SPEC 14)

Both follow scikit-learn's conventions, so they work in ``Pipeline``, ``GridSearchCV``,
``clone``, ``pickle`` and pass ``sklearn.utils.estimator_checks`` (see tests/test_sklearn.py).

Design decisions
----------------
* **Parameters.** ``__init__`` only stores its arguments. The model is a registry name
  (``latentforge.model_names()``: any unconditional model that declares ENCODES, DECODES and
  RECONSTRUCTS, registered ones included); its config fields are given as a plain dict ``config``
  (e.g. ``config={"hidden_sizes": [64], "activation": "relu", "optimizer": "adam"}``) rather
  than ``**kwargs``, which ``get_params``/``set_params``/``clone`` cannot see. The fields one
  most often tunes are also first-class parameters (``coding_size``, ``hidden_sizes``,
  ``epochs``, ``batch_size``, ``lr``), so ``GridSearchCV(..., {"coding_size": [2, 8]})`` works;
  where one is not None it overrides the same key in ``config``. None means the chapter's
  default for the model (e.g. stacked-ae: 784-100-30, SGD lr 1.5, batch 32, 20 epochs).
  Everything is validated (and coerced, as by ``make_config``) in ``fit``; a bad value raises
  :class:`InvalidParameterError` (a ``ValueError`` and a latentforge ``ConfigError``).
* **Data.** ``X`` is tabular ``(N, D)`` or images ``(N, H, W)`` / ``(N, C, H, W)`` (at most
  4-D), finite, cast to float32 for the model. ``(N, H, W)`` images get a channel axis for the
  model, as :func:`latentforge.load_data` does. After fitting, data may be given in the fitted
  shape or flattened to ``(N, n_features_in_)``. Values are used as they are: scale 0-255
  images to [0, 1] first (``X / 255``). Outputs are float64 unless the input is float32.
  Training is float32; inference runs on a float64 copy of the model, so a sample's output does
  not depend on the batch it comes with (float32 GEMMs differ in the last bits by batch size).
* **Output layer / loss ("auto").** The chapter's image autoencoders end in a sigmoid trained
  with BCE, which needs data in [0, 1]. Unless ``config`` names ``output_activation`` or
  ``loss``, a model whose default is a sigmoid output is switched to a linear output with MSE
  (and the model's per-feature centring and scaling) when the training data leave [0, 1] --
  standardised tabular data just works. Naming ``output_activation="linear"`` alone implies
  ``loss="mse"``. Asking explicitly for a sigmoid output (or BCE) with data outside [0, 1] is an
  error that says what to do. When such a model ends up with a linear output (auto or asked
  for) and ``config`` names no ``optimizer``, it is trained with Adam (lr 1e-3 unless ``lr`` is
  given): the chapter's plain-SGD rates (stacked-ae: lr 1.5) are tuned for BCE on 784 pixels
  and diverge with MSE on few-feature tables. The choices made are visible in ``model_.config``.
  Models trained on labels (conditional-vae) and non-autoencoders (GANs) are refused.
* **Randomness.** ``random_state`` (None, an int or a ``RandomState``) draws one seed that seeds
  the weight initialisation and the trainer's shuffling; torch's global RNG is restored after
  ``fit``. With an int, ``fit`` is reproducible.
* **Scores.** The reconstruction error is the mean squared error per sample in the data's
  units (whatever loss trained the model): ``score(X)`` is minus its mean (higher is better, so
  ``GridSearchCV`` without ``scoring`` picks the best reconstruction) and the outlier detector's
  ``score_samples(X)`` is minus the per-sample error (SPEC 14: the reconstruction error is the
  anomaly score).
* **Fitted state.** ``model_`` (the torch module, in eval mode, on ``device``), ``history_``
  (the trainer's per-epoch records), ``input_shape_`` (the per-sample shape seen in ``fit``),
  ``n_features_in_`` (its product), ``n_components_`` (the number of code values per sample).
  Training runs in-process without a run folder, silently unless ``verbose``.
"""
from __future__ import annotations

import copy
import math
import sys
from numbers import Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, OutlierMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from .config import make_config
from .errors import ConfigError, DataError
from .models import get_model_class
from .models.capabilities import Capability, has
from .train.trainer import Trainer

__all__ = ["AutoencoderTransformer", "AutoencoderOutlierDetector", "InvalidParameterError",
           "InvalidDataError"]

_PREDICT_BATCH = 2048


class InvalidParameterError(ConfigError, ValueError):
    """A bad estimator parameter (unknown model, unknown config key, value out of range)."""


class InvalidDataError(DataError, ValueError):
    """Data that the fitted or configured model cannot take (shape, range)."""


class _AutoencoderBase(BaseEstimator):
    """Machinery shared by the estimators: config assembly, fitting, batched inference.

    Subclasses define ``__init__`` (scikit-learn reads the parameters from its signature).
    """

    # ------------------------------------------------------------------------------ validation
    def _validate_X(self, X, *, reset: bool) -> np.ndarray:
        """Validated float array shaped for the model, (N, *model_.input_shape) after fit."""
        fitted_2d = not reset and len(getattr(self, "input_shape_", (0,))) == 1
        X = validate_data(self, X, reset=reset, ensure_2d=fitted_2d, allow_nd=not fitted_2d,
                          dtype=[np.float64, np.float32], ensure_all_finite=True)
        if X.ndim < 2:
            check_array(X, ensure_2d=True)                # raises scikit-learn's usual message
        if X.ndim > 4:
            raise InvalidDataError(f"X has shape {X.shape}: expected a table (N, D) or images "
                                   "(N, H, W) / (N, C, H, W)")
        if reset:
            self.input_shape_ = tuple(int(d) for d in X.shape[1:])
            self.n_features_in_ = math.prod(self.input_shape_)
            shape = (1, *self.input_shape_) if X.ndim == 3 else self.input_shape_
        else:
            shape = self.model_.input_shape
            got = tuple(X.shape[1:])
            if got != self.input_shape_ and not (X.ndim == 2 and got[0] == self.n_features_in_):
                what = (f"{got[0]} features" if X.ndim == 2 else f"samples of shape {got}")
                raise InvalidDataError(
                    f"X has {what}, but {type(self).__name__} is expecting {self.n_features_in_} "
                    f"features as input (samples of shape {self.input_shape_}, or flattened)")
        return X.reshape((len(X), *shape))

    # ------------------------------------------------------------------------------ config
    def _config_values(self, x: np.ndarray, seed: int) -> tuple[type, dict]:
        try:
            cls = get_model_class(self.model)
        except ConfigError as e:
            raise InvalidParameterError(str(e)) from None
        if not has(cls, Capability.ENCODES, Capability.DECODES, Capability.RECONSTRUCTS):
            raise InvalidParameterError(f"model {self.model!r} is not an autoencoder; these estimators "
                                        "need a model with encode/decode")
        if has(cls, Capability.CONDITIONAL):
            raise InvalidParameterError(f"model {self.model!r} is trained on class labels; these estimators "
                                        "train unsupervised autoencoders only")
        if self.config is not None and not isinstance(self.config, dict):
            raise InvalidParameterError(f"config must be a dict of model config fields or None, "
                                        f"got {type(self.config).__name__}")
        values = dict(self.config or {})
        for key in ("coding_size", "hidden_sizes", "epochs", "batch_size", "lr"):
            value = getattr(self, key)
            if value is not None:
                values[key] = list(value) if isinstance(value, tuple) else value
        for key in ("input_shape", "seed"):
            if key in values:
                raise InvalidParameterError(f"config key {key!r} is set by the estimator (from X / random_state)")
        values["seed"] = seed
        values["input_shape"] = list(x.shape[1:])
        # "auto" output layer, shared with the command line (latentforge/continuous.py): a
        # sigmoid/BCE model becomes linear/MSE (+ per-feature standardisation for tables, Adam)
        # for data outside [0, 1]
        from .continuous import continuous_defaults
        auto, _ = continuous_defaults(cls, values, (float(x.min()), float(x.max())),
                                      is_image=x.ndim >= 3, switch_images=True)
        values.update(auto)
        return cls, values

    # ------------------------------------------------------------------------------ fitting
    def _fit(self, X) -> np.ndarray:
        """Validate X, build and train the model; returns the validated, model-shaped X."""
        x = self._validate_X(X, reset=True)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        cls, values = self._config_values(x, seed)
        try:
            cfg = make_config(cls.config_class, values)
        except ConfigError as e:
            raise InvalidParameterError(str(e)) from None

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(cfg)
            if model.needs_unit_interval and not (x.min() >= 0.0 and x.max() <= 1.0):
                raise InvalidDataError(
                    f"X has values in [{x.min():.4g}, {x.max():.4g}] but the {self.model} model has a "
                    "sigmoid output and needs data in [0, 1]: rescale X (e.g. MinMaxScaler), or use "
                    "config={'output_activation': 'linear', 'loss': 'mse'} (the default for such data "
                    "when config names neither)")
            model.to(self.device)
            xt = torch.tensor(x, dtype=torch.float32, device=self.device)
            model.prepare(xt)
            log = (lambda msg: print(msg, file=sys.stderr)) if self.verbose else (lambda msg: None)
            trainer = Trainer(model, cfg, run_dir=None, progress=bool(self.verbose), log=log,
                              device=self.device, desc=type(self).__name__)
            history = trainer.fit(xt)
        model.eval()
        self.model_ = model
        self.history_ = history
        with torch.no_grad():
            probe = model.encode(xt[:1])
        self.code_shape_ = tuple(int(d) for d in probe.shape[1:])
        self.n_components_ = math.prod(self.code_shape_)
        return x

    # ------------------------------------------------------------------------------ inference
    def _batched(self, method, x: np.ndarray) -> np.ndarray:
        """``model_.<method>`` over ``x`` in batches, without gradients, in float64.

        Inference runs on a float64 copy of the model: float32 matrix products give results that
        depend (in the last bits) on the batch's size and make-up, and scikit-learn expects a
        sample's output not to depend on the other samples passed with it.
        """
        model = copy.deepcopy(self.model_).double().eval()
        device = next(iter(model.state_dict().values())).device
        fn = getattr(model, method) if isinstance(method, str) else (lambda xb: method(model, xb))
        out = []
        with torch.no_grad():
            for i in range(0, len(x), _PREDICT_BATCH):
                xb = torch.tensor(np.asarray(x[i:i + _PREDICT_BATCH], dtype=np.float64), device=device)
                out.append(fn(xb).detach().cpu().numpy())
        return np.concatenate(out) if out else np.empty((0,), np.float64)

    @staticmethod
    def _out_dtype(X) -> type:
        return np.float32 if getattr(X, "dtype", None) == np.float32 else np.float64

    def _errors(self, x: np.ndarray) -> np.ndarray:
        """Per-sample MSE between ``x`` (model-shaped) and its reconstruction, float64 (the
        ``reconstruction`` score of :mod:`latentforge.eval.anomaly`, in MSE)."""
        from .eval.anomaly import reconstruction_error
        return self._batched(lambda model, xb: reconstruction_error(model, xb, error="mse"), x)

    def reconstruction_error(self, X) -> np.ndarray:
        """Mean squared reconstruction error of each sample, in the data's units, shape (N,)."""
        check_is_fitted(self)
        return self._errors(self._validate_X(X, reset=False))

    def reconstruct(self, X) -> np.ndarray:
        """The model's reconstruction of X (decode(encode(X))), shaped and typed like X."""
        check_is_fitted(self)
        dtype = self._out_dtype(X)
        x = self._validate_X(X, reset=False)
        rec = self._batched("reconstruct", x)
        shape = self.input_shape_ if tuple(np.shape(X)[1:]) == self.input_shape_ else (self.n_features_in_,)
        return rec.reshape((len(x), *shape)).astype(dtype, copy=False)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


_PARAMS_DOC = """
    Parameters
    ----------
    model : str, default="stacked-ae"
        Registry name of an autoencoder (``latentforge.models.model_names()``).
    coding_size, hidden_sizes, epochs, batch_size, lr : optional
        Shortcuts for the model config fields of the same names; None keeps the model's
        default (the chapter's value) or the value in ``config``.
    config : dict or None
        Further model config fields (see ``latentforge.models.make_model_config(model)``),
        e.g. ``{"optimizer": "adam", "output_activation": "linear", "loss": "mse"}``.
    random_state : None, int or RandomState
        Seeds the weight initialisation and the shuffling.
    device : str, default="cpu"
        Torch device to train and predict on.
    verbose : bool, default=False
        Log each epoch and show progress bars (on stderr).
"""


class AutoencoderTransformer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, _AutoencoderBase):
    __doc__ = """An autoencoder as a scikit-learn transformer: ``transform`` gives the codes,
    ``inverse_transform`` decodes them, ``score`` is minus the mean reconstruction MSE.
    """ + _PARAMS_DOC + """
    Attributes
    ----------
    model_ : the trained torch module (eval mode).
    history_ : list of per-epoch training records.
    input_shape_ : per-sample shape of the training data.
    n_features_in_ : number of values per sample.
    n_components_ : number of code values per sample (columns of ``transform``).
    """

    def __init__(self, model="stacked-ae", *, coding_size=None, hidden_sizes=None, epochs=None,
                 batch_size=None, lr=None, config=None, random_state=None, device="cpu", verbose=False):
        self.model = model
        self.coding_size = coding_size
        self.hidden_sizes = hidden_sizes
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.config = config
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    def fit(self, X, y=None):
        """Train the autoencoder on X (y is ignored). Returns self."""
        self._fit(X)
        return self

    def transform(self, X):
        """The codes of X, shape (N, n_components_)."""
        check_is_fitted(self)
        dtype = self._out_dtype(X)
        x = self._validate_X(X, reset=False)
        codes = self._batched("encode", x)
        return codes.reshape(len(x), self.n_components_).astype(dtype, copy=False)

    def inverse_transform(self, X):
        """Decode codes (N, n_components_) back to data space, shaped like the training data."""
        check_is_fitted(self)
        dtype = self._out_dtype(X)
        z = check_array(X, dtype=[np.float64, np.float32], ensure_all_finite=True)
        if z.shape[1] != self.n_components_:
            raise InvalidDataError(f"codes have {z.shape[1]} values per sample, but {type(self).__name__} "
                                   f"produces {self.n_components_}")
        z = z.reshape((len(z), *self.code_shape_))
        out = self._batched("decode", z)
        return out.reshape((len(z), *self.input_shape_)).astype(dtype, copy=False)

    def score(self, X, y=None) -> float:
        """Minus the mean per-sample reconstruction MSE (higher is better)."""
        return -float(np.mean(self.reconstruction_error(X)))

    @property
    def _n_features_out(self):
        return self.n_components_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


class AutoencoderOutlierDetector(OutlierMixin, _AutoencoderBase):
    __doc__ = """Anomaly detection by reconstruction error (SPEC 14), in scikit-learn's and PyOD's style.

    The autoencoder is trained on (mostly) normal data; a sample it reconstructs badly is an
    anomaly. ``score_samples`` is minus the per-sample reconstruction MSE (lower = more
    abnormal), ``decision_function = score_samples - offset_`` (negative = outlier, like
    ``IsolationForest``) and ``predict`` gives +1 (inlier) / -1 (outlier).

    Parameters
    ----------
    contamination : float in (0, 0.5], default=0.1
        Expected share of outliers in the training data; sets ``offset_`` so that this share of
        the training samples is flagged.
    method : str, default="reconstruction"
        The anomaly score (the functions of ``latentforge score``, :mod:`latentforge.eval.anomaly`):
        ``reconstruction`` (the per-sample MSE), ``knn`` (mean distance of the codes to the 5
        nearest codes of the training data, kept as ``fit_X_``), or for ``model="vae"``
        ``iw-nll`` / ``elbo``.
    """ + _PARAMS_DOC.split("Parameters\n    ----------\n", 1)[1] + """
    Attributes
    ----------
    model_, history_, input_shape_, n_features_in_, n_components_ : as AutoencoderTransformer.
    decision_scores_ : reconstruction MSE of each training sample (PyOD: higher = more abnormal).
    offset_ : the ``contamination`` quantile of the training ``score_samples``.
    threshold_ : ``-offset_``, the same threshold on the ``decision_scores_`` scale.
    """

    def __init__(self, model="stacked-ae", *, contamination=0.1, method="reconstruction", coding_size=None,
                 hidden_sizes=None, epochs=None, batch_size=None, lr=None, config=None, random_state=None,
                 device="cpu", verbose=False):
        self.model = model
        self.contamination = contamination
        self.method = method
        self.coding_size = coding_size
        self.hidden_sizes = hidden_sizes
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.config = config
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    def fit(self, X, y=None):
        """Train on X (y is ignored) and set the outlier threshold. Returns self."""
        c = self.contamination
        if isinstance(c, bool) or not isinstance(c, Real) or not 0.0 < c <= 0.5:
            raise InvalidParameterError(f"contamination must be a number in (0, 0.5], got {c!r}")
        from .eval.anomaly import METHODS
        if self.method not in METHODS:
            raise InvalidParameterError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        x = self._fit(X)
        from .eval.anomaly import capabilities
        if self.method not in capabilities(self.model_):
            raise InvalidParameterError(f"method {self.method!r}: model {self.model!r} can score by "
                                        f"{', '.join(capabilities(self.model_))}")
        if self.method == "knn":
            self.fit_X_ = x
        self.decision_scores_ = self._anomaly(x, training=True)
        self.offset_ = float(np.percentile(-self.decision_scores_, 100.0 * c))
        self.threshold_ = -self.offset_
        return self

    def _anomaly(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """The anomaly score of model-shaped ``x`` (higher = more abnormal), float64."""
        if self.method == "reconstruction":
            return self._errors(x)
        from .eval.anomaly import anomaly_scores
        model = copy.deepcopy(self.model_).double().eval()        # float64, as ``_batched``
        return anomaly_scores(model, np.asarray(x, np.float64), self.method, reference=getattr(self, "fit_X_", None),
                              exclude_self=training and self.method == "knn", seed=0)

    def score_samples(self, X):
        """Minus the per-sample anomaly score (by default the reconstruction MSE): the lower, the
        more abnormal."""
        check_is_fitted(self)
        return -self._anomaly(self._validate_X(X, reset=False))

    def decision_function(self, X):
        """``score_samples(X) - offset_``: negative for outliers."""
        return self.score_samples(X) - self.offset_

    def predict(self, X):
        """+1 for inliers, -1 for outliers."""
        return np.where(self.decision_function(X) < 0, -1, 1)
