"""The table's encoder (label-free, fit on the whole table) and the model's pipeline.

``encoder`` is scikit-learn's ColumnTransformer: numeric columns pass through (missing
values stay NaN: they are imputed per training fold, tuner.inputs.cv), optional
MissingIndicator columns, dates expanded to numeric parts, categorical columns through
SimpleImputer (missing is a level of its own) and OneHotEncoder (unseen categories
ignored at prediction time; beyond ``max_categories`` levels the rarest are pooled).
Nothing it learns depends on the target, so fitting it on every row leaks no label.

``model_pipeline`` is what a served model applies to raw rows: the encoder, then a
SimpleImputer (medians) and a StandardScaler fit on all the rows of the refit.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import MissingIndicator, SimpleImputer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from tuner.inputs.tables.columns import ColumnRoles

MISSING_LEVEL = "__missing__"
DATE_PARTS = ("year", "month", "dayofweek", "dayofyear")
DEFAULT_MAX_CATEGORIES = 50


def _date_parts(frame: pd.DataFrame) -> pd.DataFrame:
    """Each date column as year, month, day of week, day of year (NaN when missing or
    unreadable)."""
    out = {}
    for name in frame.columns:
        when = pd.to_datetime(frame[name], errors="coerce", format="mixed")
        for part in DATE_PARTS:
            out[f"{name}_{part}"] = getattr(when.dt, part).astype("float64")
    return pd.DataFrame(out, index=frame.index)


def _date_names(transformer, names) -> np.ndarray:  # noqa: ARG001
    return np.asarray([f"{n}_{p}" for n in names for p in DATE_PARTS], dtype=object)


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Categorical cells as text, missing ones NaN (one type per column for the encoder)."""
    return frame.apply(lambda col: col.map(lambda v: v if pd.isna(v) else str(v)))


def _numbers(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.apply(lambda col: pd.to_numeric(col, errors="coerce")).astype("float64")


@dataclasses.dataclass
class TableEncoding:
    """A fitted encoder and what the folds need to know of its output columns."""

    encoder: ColumnTransformer
    feature_names: tuple[str, ...]
    imputable: np.ndarray        # bool [d]: output columns that can hold NaN
    one_hot: np.ndarray          # bool [d]: one-hot columns

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.encoder.transform(frame), np.float32)


def fit_encoding(X: pd.DataFrame, roles: ColumnRoles, *, missing_indicator: bool = False,
                 max_categories: int | None = DEFAULT_MAX_CATEGORIES) -> TableEncoding:
    """Fit the encoder on the whole (feature) table."""
    parts = []
    if roles.numeric:
        parts.append(("num", FunctionTransformer(_numbers, feature_names_out="one-to-one"),
                      list(roles.numeric)))
    if roles.dates:
        parts.append(("date", FunctionTransformer(_date_parts, feature_names_out=_date_names),
                      list(roles.dates)))
    indicated = [c for c in (*roles.numeric, *roles.dates) if X[c].isna().any()]
    if missing_indicator and indicated:
        parts.append(("missing", MissingIndicator(features="all"), indicated))
    if roles.categorical:
        parts.append(("cat", make_pipeline(
            FunctionTransformer(_as_text, feature_names_out="one-to-one"),
            SimpleImputer(strategy="constant", fill_value=MISSING_LEVEL),
            OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=max_categories,
                          sparse_output=False, dtype=np.float32)),
            list(roles.categorical)))
    # Plain names (age, sex_f, date_year) unless two parts would make the same one.
    encoder = ColumnTransformer(parts, remainder="drop", verbose_feature_names_out=False)
    try:
        encoder.fit(X)
        names = encoder.get_feature_names_out()
    except ValueError:  # not unique
        encoder.set_params(verbose_feature_names_out=True)
        encoder.fit(X)
        names = encoder.get_feature_names_out()
    d = len(names)
    imputable, one_hot = np.zeros(d, bool), np.zeros(d, bool)
    for name, cols in encoder.output_indices_.items():
        imputable[cols] = name in ("num", "date")
        one_hot[cols] = name == "cat"
    return TableEncoding(encoder, tuple(str(n) for n in names), imputable, one_hot)


def model_pipeline(encoder, fill: np.ndarray, shift: np.ndarray, scale: np.ndarray
                   ) -> Pipeline:
    """Raw rows -> the network's inputs: ``encoder`` (None: the columns as they are),
    then scikit-learn's SimpleImputer and StandardScaler holding the refit's own numbers
    (medians ``fill``, means ``shift``, scales ``scale``, each [d])."""
    imputer = SimpleImputer(strategy="median", keep_empty_features=True)
    imputer.fit(np.asarray(fill, np.float64)[None, :])  # statistics_ = fill
    scaler = StandardScaler()
    scaler.mean_ = np.asarray(shift, np.float64)
    scaler.scale_ = np.asarray(scale, np.float64)
    scaler.var_ = scaler.scale_ ** 2
    scaler.n_features_in_ = len(shift)
    scaler.n_samples_seen_ = 1
    steps = [("impute", imputer), ("scale", scaler)]
    if encoder is not None:
        steps.insert(0, ("encode", encoder))
    return Pipeline(steps)
