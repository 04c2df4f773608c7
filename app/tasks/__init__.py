"""The task service layer: creating, reading and deleting tasks, and their history."""
