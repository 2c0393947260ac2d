"""Signs or verifies a Standard Webhooks message with the official Python
library (PyPI `standardwebhooks`), for the integration tests.

    python standard_webhooks.py sign SECRET MSG_ID TIMESTAMP BODY_FILE
        prints the webhook-signature value the library computes
    python standard_webhooks.py verify SECRET BODY_FILE HEADER_FILE
        HEADER_FILE holds `Name: value` lines; exits 0 when the library
        accepts them, 1 (with its message) when it refuses
    python standard_webhooks.py version
        prints the library's version
"""

import sys
from datetime import datetime, timezone
from importlib.metadata import version

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main(argv):
    cmd = argv[1]
    if cmd == "version":
        print(version("standardwebhooks"))
        return 0
    if cmd == "sign":
        secret, msg_id, timestamp, body_file = argv[2:6]
        with open(body_file, "rb") as f:
            body = f.read().decode()
        when = datetime.fromtimestamp(int(timestamp), tz=timezone.utc)
        print(Webhook(secret).sign(msg_id=msg_id, timestamp=when, data=body))
        return 0
    if cmd == "verify":
        secret, body_file, header_file = argv[2:5]
        with open(body_file, "rb") as f:
            body = f.read()
        headers = {}
        with open(header_file, encoding="utf-8") as f:
            for line in f:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip()] = value.strip()
        try:
            Webhook(secret).verify(body, headers, json_parse=False)
        except WebhookVerificationError as e:
            print(f"refused: {e}")
            return 1
        return 0
    print(f"unknown command {cmd}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
