"""Load benchmarks of the task manager (not tests): see benchmarks/README.md."""
