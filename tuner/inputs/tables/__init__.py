"""Real tables in: CSV, Parquet and pandas DataFrames with string, date and ID columns
and missing cells, turned into the numeric table a sweep trains on.

- ``reading``: the file or DataFrame, the target, the columns kept, every problem at once;
- ``columns``: what each column is (numeric, categorical, date, ID) and why;
- ``encoding``: the label-free encoder (scikit-learn's ColumnTransformer, OneHotEncoder,
  MissingIndicator) fit on the whole table, and the model's preprocessing pipeline.

Imputation and scaling are statistics of the training rows, so they are fit per fold
(tuner.inputs.cv), never here.
"""
