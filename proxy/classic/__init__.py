"""The Classic surface: what legacy callers send and read (route table, rewrites, answer fix-ups, auth)."""
