"""Writes customers.csv: a synthetic churn table of the kind users bring, with an ID
column, a date column, text categories, missing numeric and text cells and an
imbalanced yes/no target (about 1 in 6 churns). Deterministic (seed 7).

    python search_spaces/data/make_customers.py
"""

import os

import numpy as np
import pandas as pd

rng = np.random.default_rng(7)
n = 1200
age = rng.normal(42, 12, n).round()
plan = rng.choice(["basic", "plus", "pro"], n, p=[0.5, 0.35, 0.15])
region = rng.choice(["north", "south", "east", "west", "islands"], n,
                    p=[0.3, 0.3, 0.2, 0.15, 0.05])
spend = np.round(rng.gamma(2.0, 20.0, n) + np.where(plan == "pro", 40, 0), 2)
calls = rng.poisson(1.5, n)
signup = pd.Timestamp("2021-01-01") + pd.to_timedelta(rng.integers(0, 1400, n), unit="D")
tenure_days = (pd.Timestamp("2025-01-01") - signup).days.to_numpy()
score = (0.6 * calls - 0.002 * tenure_days - 0.015 * spend + 0.8 * (plan == "basic")
         + 0.4 * (region == "islands") - 0.01 * (age - 42) + rng.normal(0, 0.8, n))
churned = np.where(score > np.quantile(score, 1 - 1 / 6), "yes", "no")
table = pd.DataFrame({
    "customer_id": [f"C{100000 + i}" for i in range(n)],
    "signup_date": signup.strftime("%Y-%m-%d"),
    "age": age, "plan": plan, "region": region, "monthly_spend": spend,
    "support_calls": calls, "churned": churned})
table.loc[rng.choice(n, 40, replace=False), "age"] = np.nan
table.loc[rng.choice(n, 25, replace=False), "plan"] = np.nan
table.loc[rng.choice(n, 12, replace=False), "monthly_spend"] = np.nan
table.to_csv(os.path.join(os.path.dirname(os.path.abspath(__file__)), "customers.csv"),
             index=False)
