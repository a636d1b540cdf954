"""Authentication as FastAPI dependencies: each route declares what it needs.

``KeyHolder``: an API key (``Authorization: Bearer <key>``), else 401. ``Operator``:
a key limited to no projects, else 403. ``Reader``: a key or the signed link of the
job in the path, else 403. Each hands the route a ``access.Principal`` (which key, what
it may reach), and all appear in the OpenAPI document, so its page shows which routes
need a key. A route reading a job checks it with ``reachable``: another project's job
(or, for a link, another job) is answered 404, as an unknown one, so a limited key
cannot tell which jobs exist. The checks themselves are ``access``'s; this module only
reads them off the request.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Security
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer

from .. import access
from ..access import Principal
from ..errors import JobNotFound
from .errors import Refused

# auto_error=False: a missing or malformed header is ours to answer (our body, our status).
bearer = HTTPBearer(scheme_name="apiKey", auto_error=False,
                    description="An API key from PREVIEW_API_KEYS: `Authorization: Bearer <key>`.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
# The signed link a status response hands out: ?expires=<Unix time>&sig=<HMAC>. Declared as
# a scheme so the OpenAPI document shows these routes open with a key *or* a link.
signed_link = APIKeyQuery(name="sig", scheme_name="signedLink", auto_error=False,
                          description="A signed link from a status response's `links`: "
                                      "`?expires=<Unix time>&sig=<HMAC-SHA256>`, for one job.")

KEY_REQUIRED = "an API key is required: Authorization: Bearer <key>"
KEY_OR_LINK_REQUIRED = "a valid signed link or an API key is required"
OPERATOR_REQUIRED = "this key is limited to projects: the operator routes need a key written alone"


def _key(credentials: HTTPAuthorizationCredentials | None) -> Principal | None:
    return access.authenticate(credentials.credentials if credentials else None)


async def api_key(credentials: Credentials) -> Principal:
    """The key's principal; 401 without a valid key."""
    principal = _key(credentials)
    if principal is None:
        raise Refused(401, KEY_REQUIRED, headers={"WWW-Authenticate": "Bearer"})
    return principal


async def key_or_link(
    job_id: str,
    credentials: Credentials,
    sig: Annotated[str | None, Security(signed_link)],
    expires: Annotated[str | None, Query(description="signed link: the Unix time it expires")] = None,
) -> Principal:
    """A key's principal, or that of a signed link to this job; 403 without either."""
    principal = _key(credentials) or access.open_link(job_id, expires, sig)
    if principal is None:
        raise Refused(403, KEY_OR_LINK_REQUIRED)
    return principal


async def operator_key(credentials: Credentials) -> Principal:
    """An operator's principal (a key limited to no project); 401 without a key, 403
    for a key limited to projects."""
    principal = await api_key(credentials)
    if not principal.operator:
        raise Refused(403, OPERATOR_REQUIRED)
    return principal


def reachable(principal: Principal, status: dict[str, Any]) -> dict[str, Any]:
    """``status`` (of a job) when ``principal`` may act on that job, else JobNotFound (404)."""
    if not principal.may_reach(status["jobId"], status.get("projectId")):
        raise JobNotFound(status["jobId"])
    return status


KeyHolder = Annotated[Principal, Security(api_key)]
Operator = Annotated[Principal, Security(operator_key)]
Reader = Annotated[Principal, Security(key_or_link)]
