"""The browser demo (debug mode only): record a reading, upload it, follow it live."""
