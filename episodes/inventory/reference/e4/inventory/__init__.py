"""inventory: an HTTP service for stock reservations (run it with ``python3 -m inventory``)."""
