"""Outgoing calls: httpx clients and gRPC channels with the workload's identity."""
