"""Entry points that run inside a job process (never imported by tools at start-up)."""
