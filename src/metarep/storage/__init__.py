"""What a run leaves on disk: run directories and checkpoints, atomic writes, the sweep's
results table, the number format of every CSV and Markdown table."""
