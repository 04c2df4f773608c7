"""Task events: the LISTEN connection, the in-process hub and the SSE streams."""
