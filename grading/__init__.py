"""Grading: the graders, MLE-bench's medals, the task's own grader and hidden grading; shared by
the search (graphs/) and the benchmarks (benchmark/)."""
