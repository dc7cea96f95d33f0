"""Model adapters (trunk/tail split at the target layer) and their registry."""
