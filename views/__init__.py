"""The faces: what a user reads.

The run report (`report/`: tree.html, report.md and its figures), a run's exported files
(`export.py`: tree.json, summary.json, best_solution.py, submission.csv), the live progress of a
run (`progress.py`) and the command lines' argument parsing (`cli.py`: one-line errors, exit
codes). Everything here is derived from the search's state and files; the graphs that make them
are wired in graphs/, and nothing here imports benchmark/.
"""
