"""`helm test`'s check of a release: every service answers grpc.health.v1 SERVING and reward scores one item.

Exit 0 when all pass, 1 otherwise, one line per check. The service token and the TLS CA come from the
same EUREKA_SECURITY__* variables the services read.
Usage: python deploy/release_check.py --health NAME=host:port [...] --reward host:port
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from healthcheck import check  # noqa: E402 - the sibling script, also run on its own


def verify_once(addr: str, token: str | None, ca: str | None) -> str:
    """'' when reward scores a correct boxed answer 1, else a sentence saying what came back."""
    import grpc
    from eureka.v1 import reward_pb2, reward_pb2_grpc

    host = addr.rsplit(":", 1)[0]
    if ca is not None:
        with open(ca, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        channel = grpc.secure_channel(addr, creds, options=[("grpc.ssl_target_name_override", host)])
    else:
        channel = grpc.insecure_channel(addr)
    item = reward_pb2.VerifyItem(response="The sum is \\boxed{4}.", gold="4", item_id="helm-test",
                                 mode=reward_pb2.REWARD_MODE_PRETRAINED)
    metadata = [("authorization", f"Bearer {token}")] if token else None
    with channel:
        try:
            reply = reward_pb2_grpc.RewardServiceStub(channel).Verify(
                reward_pb2.VerifyRequest(items=[item]), timeout=30, metadata=metadata)
        except grpc.RpcError as e:
            return f"Verify failed: {e.code().name} {e.details()}"
    (result,) = reply.results
    if result.status != reward_pb2.ITEM_STATUS_OK or result.accuracy != 1.0:
        return f"Verify scored a correct answer {result.accuracy} (status {result.status}, {result.detail!r})"
    return ""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="health of every service and one reward call")
    p.add_argument("--health", action="append", default=[], metavar="NAME=HOST:PORT")
    p.add_argument("--reward", required=True, metavar="HOST:PORT")
    args = p.parse_args(argv)
    token = os.environ.get("EUREKA_SECURITY__SERVICE_TOKEN") or None
    ca = os.environ.get("EUREKA_SECURITY__TLS_CA") or None
    failed = 0
    for spec in args.health:
        name, _, addr = spec.partition("=")
        status = check(addr, ca=ca, server_name=addr.rsplit(":", 1)[0] if ca else None, timeout_s=10)
        print(f"{name} {addr}: {status}")
        failed += status != "SERVING"
    problem = verify_once(args.reward, token, ca)
    print(f"reward Verify {args.reward}: {problem or 'scored 1'}")
    failed += bool(problem)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
