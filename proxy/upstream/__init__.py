"""The new API side: IAM bearer tokens, the HTTP client and its transports."""
