"""Training: arguments, the entry point for every stage, and (later) the preference losses."""
