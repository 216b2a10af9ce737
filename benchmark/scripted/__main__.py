"""``python -m benchmark.scripted [--host H] [--port P] [--marathon M]``: serve the scripted
model (a simulation) in the foreground."""

import argparse

from benchmark.scripted.server import ScriptedConfig, serve_forever

parser = argparse.ArgumentParser(prog="python -m benchmark.scripted", description=__doc__)
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=0)
parser.add_argument("--marathon", default="ledger")
args = parser.parse_args()
serve_forever(ScriptedConfig(host=args.host, port=args.port, marathon=args.marathon))
