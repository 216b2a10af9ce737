"""ledger: a command-line event ledger (run it with ``python3 -m ledger``)."""
