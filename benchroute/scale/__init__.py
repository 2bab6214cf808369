"""Spreading the work that grows with the data (embedding a pool, routing a prompt file) over a
Ray cluster. Nothing here is imported by the rest of the package: the scale-out uses the router,
never the other way round."""
