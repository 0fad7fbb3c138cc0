"""`scan`: find the code behind legacy traffic (rules, analyzer, fixes, output, traffic join)."""
