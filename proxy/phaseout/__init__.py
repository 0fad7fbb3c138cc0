"""Phase-out: request-time policy and headers, metrics, usage record, admin endpoints, migration report."""
