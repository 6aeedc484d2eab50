"""Reproduce the paper's experiments and run the studies it leaves open.

- `table1`:  test excess risk of every method in the paper's setting (MATH.md 7).
- `figure1`: the evolution of the tracked norms with the theory drawn in.
- `studies/`: one module per study: tasks (N tasks against infinite tasks, to the plateau),
  adapt (test-time adaptation), heads (general mu*, Sigma* of the task heads), rates (the unlearning rate
  against alpha, beta, m_in).

The settings live in experiments/ (TOML, with the reasons for each choice); the command line is
`metarep reproduce ...` (cli.py). See docs/reproduce.md.
"""
