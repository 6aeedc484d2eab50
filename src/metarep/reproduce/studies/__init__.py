"""The studies the paper leaves open, one module each, all of one shape: `design` reads
experiments/studies/<name>.toml, `plan` makes the jobs, `aggregate` turns their results into
rows, `findings` into sentences, `render` into the page; `run(out, ...)` does all of it and
writes <name>.md, <name>.csv, <name>_summary.json and <name>.png.

- tasks:   FO-ANIL with N training tasks against infinite tasks, to the horizon where
           perp_norm settles;
- adapt:   test excess risk against the number of test-time gradient steps, and ridge / least
           squares on the learned features;
- heads: non-zero head mean and non-diagonal Sigma*: do the tracked limits still hold?
- rates:   the unlearning rate of perp_norm^2 against alpha, beta and m_in, next to Lemma 2.
"""
