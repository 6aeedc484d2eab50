# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # metarep from Python
#
# FO-ANIL on multi-task linear regression with a network wider than the true rank
# (`k' = d = 20 > k = 3`): does it learn the subspace of `B*` and unlearn the rest?
# Open this file as a notebook with `jupytext --to notebook examples/notebook.py`, or run it
# as a script: `python examples/notebook.py` (it prints the tables; no `if __name__ == "__main__":`
# is needed around the sweep, whose worker processes do not re-run this file).

# %%
import metarep

config = {
    "problem": {"d": 20, "k": 3, "task_cov": [1.0, 2.0, 3.0], "seed": 0},
    "model": {"width": 20},
    "method": {"name": "fo-anil"},
    "train": {"tasks": 500, "m_in": 10, "m_out": 10, "alpha": 0.1, "beta": 0.1, "steps": 400, "log_every": 20},
    "test": {"tasks": 500, "m_test": 20},
}
result = metarep.run(config)
result

# %% [markdown]
# The metric history is a DataFrame: `align_norm` is `||B*^T B||_2` (the learned part),
# `perp_norm` is `||P_perp B||_2` (what lies outside the subspace of `B*`, to be unlearned).

# %%
result.metrics[["step", "loss", "align_norm", "perp_norm"]].tail()

# %%
print(result.summary["test"])

# %%
figure = result.figure()
figure

# %% [markdown]
# The methods metarep knows, and what each can do:

# %%
print(metarep.methods("linear")[["name", "iterative", "infinite_tasks", "online_tasks", "default_adapt"]])

# %% [markdown]
# A small sweep: two inner-loop sample sizes, two seeds, run on worker processes. The table has
# one row per run; running the same call again on the same `out` skips what is complete. When a
# run fails, `metarep.sweep` raises `metarep.sweeps.RunsFailed` once every run is recorded, so
# a script stops with a non-zero exit status.

# %%
import tempfile

out = tempfile.mkdtemp(prefix="metarep-sweep-")
table = metarep.sweep({**config, "train": {**config["train"], "steps": 100}},
                      grid={"train.m_in": [5, 20]}, seeds=[0, 1], out=out)
print(table.groupby("train.m_in")[["perp_norm", "excess_risk"]].mean())
