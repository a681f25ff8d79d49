"""The dashboard's routes, one module per area, each exporting ``ROUTES`` (its starlette Routes)."""
