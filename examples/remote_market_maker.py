"""A remote market maker for ``gpuex serve``, in plain Python: only the ``websockets`` library
and the standard library, no gpuex imports (so it reads like a bot in any other language).

Run it with one command (a session of the ``demo`` market with this bot trading ``maker``; the
session waits for it, runs, and prints its summary)::

    rm -f /tmp/mm.db /tmp/mm-tokens.json; gpuex serve demo --db /tmp/mm.db --remote maker \
        --tokens-file /tmp/mm-tokens.json & python examples/remote_market_maker.py \
        /tmp/mm-tokens.json; wait

or, with a session already serving, pass the URL and the token it printed::

    python examples/remote_market_maker.py --url ws://127.0.0.1:8765 --token TOKEN

What it does: on every print of the H100 rental index it cancels its quotes on the H100
perpetual and quotes SIZE lots at SPREAD ticks either side of the print — the same commands as
``clients.demo.DemoMaker``, so the session's event log is byte-identical to the one with the
in-process bot. The protocol is in ``docs/protocol.md``: say ``hello`` with the token, receive
``welcome``, then answer every ``step`` with one ``commands`` message; ``stop`` ends it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from websockets.sync.client import connect

PERP, INDEX = "H100-PERP", "H100-RENTAL"
SPREAD, SIZE = 30, 10


def on_step(step: dict) -> list[dict]:
    """The commands answering one step (its ``messages`` are ``[callback, payload]`` pairs)."""
    commands = []
    for callback, payload in step["messages"]:
        if callback == "on_index" and payload["index"] == INDEX:
            value = payload["value"]  # ticks
            commands.append({"type": "cancel_all", "instrument": PERP})
            for side, price in (("buy", max(value - SPREAD, 1)), ("sell", value + SPREAD)):
                commands.append(
                    {"type": "submit", "instrument": PERP, "side": side, "price": price,
                     "qty": SIZE, "order_type": "limit", "tif": "gtc", "post_only": False}
                )  # fmt: skip
        elif callback == "on_order" and payload["status"] == "rejected":
            print(f"rejected: {payload['reason']}", file=sys.stderr)
    return commands


def run(url: str, token: str) -> int:
    """Trade the session at ``url`` until it stops; returns the number of steps answered."""
    steps = 0
    with connect(url, max_size=None, compression=None) as ws:
        ws.send(json.dumps({"type": "hello", "protocol": 1, "token": token, "books": [PERP]}))
        welcome = json.loads(ws.recv())
        if welcome["type"] != "welcome":
            raise SystemExit(f"refused: {welcome.get('reason')}")
        print(f"connected as {welcome['bot']} on account {welcome['account']}", file=sys.stderr)
        for raw in ws:
            message = json.loads(raw)
            if message["type"] == "step":
                reply = {"type": "commands", "step": message["step"],
                         "commands": on_step(message), "timers": []}  # fmt: skip
                ws.send(json.dumps(reply))
                steps += 1
            elif message["type"] == "error":
                print(f"gateway error: {message['reason']}", file=sys.stderr)
            elif message["type"] == "stop":
                break
    return steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tokens_file", nargs="?", help="the JSON file of gpuex serve --tokens-file")
    parser.add_argument("--account", default="maker", help="account in the tokens file")
    parser.add_argument("--url", help="the gateway's URL (instead of a tokens file)")
    parser.add_argument("--token", help="the account's token (instead of a tokens file)")
    parser.add_argument("--wait", type=float, default=30, help="seconds to wait for the file")
    args = parser.parse_args(argv)
    if args.tokens_file:
        path, deadline = Path(args.tokens_file), time.monotonic() + args.wait
        while not path.exists():  # the session writes it once it listens
            if time.monotonic() > deadline:
                raise SystemExit(f"{path} did not appear within {args.wait:g} s")
            time.sleep(0.1)
        tokens = json.loads(path.read_text())
        url, token = tokens["url"], tokens["accounts"][args.account]["token"]
    elif args.url and args.token:
        url, token = args.url, args.token
    else:
        parser.error("give a tokens file, or --url and --token")
    steps = run(url, token)
    print(f"session over after {steps} steps", file=sys.stderr)


if __name__ == "__main__":
    main()
