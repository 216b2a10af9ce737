#!/usr/bin/env python3
"""marathon-check: ask the harness to score the workspace as it stands now.

Installed as /usr/local/bin/marathon-check in the agent image. The only way out of a trial
container is its proxy socket (served on 127.0.0.1 by the in-container forwarder); this command
posts to the harness's self-check endpoint there, authenticated by the trial's token
($MARATHON_TOKEN), and prints what the trial's arm allows it to see: the names of the failing
gates and checks (plus their first failure message at feedback level "messages"), or that
every active gate passes. Gate source, inputs and the names of passing gates are never shown.
The arm sets how many self-checks an episode may use (self_checks = N).

Exit status: 0 every active gate passes; 1 some gate fails; 2 no self-check is available here
(no token, harness unreachable, or the arm allows none); 3 the episode's limit is reached (nothing
was scored); 4 the harness could not score the workspace this time (not counted: try again).
"""

import json
import os
import sys
import urllib.error
import urllib.request

EXIT = {"green": 0, "red": 1, "limit_reached": 3, "no_verdict": 4}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    token = os.environ.get("MARATHON_TOKEN", "")
    if not token:
        print("marathon-check: no self-check is available here (MARATHON_TOKEN is not set)",
              file=sys.stderr)
        return 2
    url = os.environ.get("MARATHON_CHECK_URL", "http://127.0.0.1:8790").rstrip("/")
    req = urllib.request.Request(url + "/marathon/self-check", data=b"{}", method="POST",
                                 headers={"Authorization": "Bearer " + token,
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=1800) as resp:
            doc = json.loads(resp.read())
    except urllib.error.HTTPError as e:
        try:
            detail = json.loads(e.read()).get("error", {}).get("message", "")
        except ValueError:
            detail = ""
        print(f"marathon-check: not available (HTTP {e.code}){': ' + detail if detail else ''}",
              file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:
        print(f"marathon-check: the harness cannot be reached: {e}", file=sys.stderr)
        return 2
    print(doc.get("text", "").rstrip())
    return EXIT.get(doc.get("status"), 2)


if __name__ == "__main__":
    sys.exit(main())
