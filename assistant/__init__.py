"""The conversation: agent loop, brains, workflow state, the Textual app and the CLI."""
