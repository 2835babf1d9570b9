"""HTTP plumbing both services share: error bodies, id rules, health routes."""
