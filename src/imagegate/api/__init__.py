"""HTTP routers, one module per resource. Thin: parsing and auth here, work in the service."""
