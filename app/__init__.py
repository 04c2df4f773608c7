"""ILPS task manager."""
