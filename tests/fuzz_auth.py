"""Schemathesis hooks for tests/test_api_fuzz.py (SCHEMATHESIS_HOOKS=fuzz_auth):
each request carries the API token of a role its operation allows, read
from the operation's own `x-roles` in the schema, so every route is fuzzed
past its permission check, routes added later included. The tokens (role
-> token) come in FUZZ_TOKENS."""

import json
import os

import schemathesis

TOKENS = json.loads(os.environ.get("FUZZ_TOKENS", "{}"))
PREFERENCE = ("viewer", "pharmacy_system", "technician", "pharmacist", "admin")


@schemathesis.auth(refresh_interval=None)
class RoleToken:
    def get(self, case, context):
        allowed = context.operation.definition.raw.get("x-roles") or []
        return next((TOKENS[r] for r in PREFERENCE if r in allowed and r in TOKENS), None)

    def set(self, case, data, context):
        if data:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}
