"""A worker uses every local device: the lanes of a batch are sharded across them, with the
same results as on one device (CPU split into 2 devices, as --xla_force_host_platform_device_count=2
does; the CLI sets it through TUNER_CPU_DEVICES / jax_num_cpu_devices)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from dist_helpers import spec_file

# One `tuner run` on the default (sqlite) stores of its folder, then the device count it
# saw and its trials (state, value, params; last val_loss and train_loss from MLflow).
SCRIPT = r"""
import json
import jax
import optuna
from tuner import stores
from tuner.cli import main

try:
    main()
except SystemExit as e:
    assert e.code in (0, None), e.code
from mlflow import MlflowClient
root = stores.results_root()
study = optuna.load_study(study_name="shard", storage=stores.default_storage_url(root))
client = MlflowClient(stores.default_tracking_uri(root))
trials = {}
for t in study.trials:
    run = client.get_run(t.user_attrs["mlflow_run_id"])
    trials[t.number] = [t.state.name, t.value, t.params, run.data.metrics["val_loss"],
                        run.data.metrics["train_loss"]]
print(json.dumps({"devices": jax.local_device_count(), "trials": trials}))
"""


def _sweep(folder, env, devices: int):
    folder.mkdir()
    spec = spec_file(folder, "shard", search={"trials": 4, "batch": 2})
    env = dict(env)
    # The CLI makes one JAX device per CPU core unless TUNER_CPU_DEVICES says otherwise.
    env["TUNER_CPU_DEVICES"] = str(devices)
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, "run", str(spec), "--no-refit"],
                            cwd=folder, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    return proc


def test_two_local_devices_give_the_results_of_one(tmp_path, tuner_env):
    procs = {n: _sweep(tmp_path / f"devices{n}", tuner_env, n) for n in (1, 2)}
    results = {}
    for n, proc in procs.items():
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-3000:]
        results[n] = json.loads(out.strip().splitlines()[-1])
    assert results[1]["devices"] == 1 and results[2]["devices"] == 2
    one, two = results[1]["trials"], results[2]["trials"]
    assert sorted(one) == sorted(two) and len(one) == 4
    for number in one:
        state1, value1, params1, *losses1 = one[number]
        state2, value2, params2, *losses2 = two[number]
        assert state1 == state2 == "COMPLETE"
        assert params1 == params2
        assert value2 == pytest.approx(value1, abs=1e-5), number
        # the final epoch's validation and training loss (fold means): continuous values
        assert losses2 == pytest.approx(losses1, abs=1e-5), number
