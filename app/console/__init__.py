"""The operator console (`/console`): overview, failures, a task's timeline, and actions."""
