"""The linear model's mathematics (MATH.md): primitives, the one-step pass, the population
dynamics and its formula, test-time heads and risk, theory, the tracked norms, the
random-effects model. NumPy only; no I/O."""
