"""The JSON-RPC surface: dispatch, authentication, jobs, and one module per namespace."""
