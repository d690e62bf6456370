"""Finding: a Policy subclass that refines the (private) _flow is no longer consulted by Guard.
Run: PYTHONPATH=<worktree>/src python repro_subflow.py"""
from zerotrust import Authenticator, Guard, Policy, Rule, TokenIssuer, TokenVerifier
from zerotrust.adapters._asgi_view import ScopeView
from zerotrust.audit.sinks import MemorySink
from zerotrust.authz.decision import Decision
from zerotrust.tokens import PrivateJWK

class NoAlice(Policy):
    def _flow(self, principal, op, results, *, enforced_only):
        d = yield from super()._flow(principal, op, results, enforced_only=enforced_only)
        if principal is not None and principal.subject == "alice":
            return Decision(False, "subclass_refused", policy_id=self.id)
        return d

key = PrivateJWK.generate("ES256", kid="k1")
tok = TokenIssuer(key, issuer="https://i").issue(subject="alice", audience="a", ttl=600)
pol = NoAlice([Rule("a")], id="p")
g = Guard(authenticator=Authenticator(tokens=TokenVerifier(issuer="https://i", audience="a",
          keys=TokenIssuer(key, issuer="https://i").jwks(), algorithms=["ES256"])),
          policy=pol, audit=[MemorySink()])
scope = {"type": "http", "method": "GET", "path": "/x", "raw_path": b"/x", "headers":
         [(b"authorization", f"Bearer {tok}".encode())], "client": ("1.2.3.4", 1)}
o = g.evaluate(ScopeView(scope, "/x"))
p = o.principal
from zerotrust.authz.rules import Operation
print("guard.evaluate:", o.allowed, o.status, o.decision.reason)
print("policy.evaluate:", pol.evaluate(p, Operation("GET", "/x")).reason)
