"""Sinks: the warehouse writer and the alert channels (issues 5 and 6)."""
