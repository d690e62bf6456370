"""Call the orders service of ``server.py --serve`` from another process, with the files it
wrote: the caller's SVID, the trust bundle and a token.

    python examples/grpc/client.py localhost:8443 /tmp/zerotrust-grpc-...

The SVID and bundle come from files the way a SPIFFE helper (SPIRE) writes them; a rotated
SVID is picked up by the next connection.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import grpc

from zerotrust import FileBundleSource, FileSvidSource, StaticTokenSource
from zerotrust.grpc import aio_secure_channel

ORDERS = "spiffe://example.org/ns/shop/sa/orders"


def to_json(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


async def call(target: str, folder: Path) -> int:
    async with aio_secure_channel(
        target,
        svid=FileSvidSource(folder / "web.pem", folder / "web.key"),
        bundles=FileBundleSource({"example.org": folder / "bundle.pem"}),
        server_id=ORDERS,
        token_source=StaticTokenSource((folder / "token").read_text()),
    ) as channel:
        get = channel.unary_unary(
            "/shop.Orders/Get", request_serializer=to_json, response_deserializer=json.loads
        )
        try:
            reply = await get({"id": 7}, timeout=10)
        except grpc.aio.AioRpcError as exc:
            print(f"/shop.Orders/Get -> {exc.code().name} {exc.details()}")
            return 1
        print(f"/shop.Orders/Get -> OK {reply}")
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="Call the gRPC orders example.")
    parser.add_argument("target", help="host:port the server printed")
    parser.add_argument("folder", type=Path, help="the folder the server printed")
    args = parser.parse_args()
    return asyncio.run(call(args.target, args.folder))


if __name__ == "__main__":
    sys.exit(main())
