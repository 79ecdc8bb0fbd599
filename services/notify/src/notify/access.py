"""Who may do what in notify's API: staff by JWT (intake's keys and rules), the admin token.

- An officer manages their own Web Push and email subscriptions and preferences.
- An agency leader also manages the agency's webhooks and reads its deliveries.
- The coordinator (and the admin token) manage any subscription; supervisors read any.
- An upstream app's webhook (citizens' status updates) is registered with the admin token.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Request

from paht_common.problems import Problem, problem_responses
from paht_common.roles import AGENCY_ROLES, Role
from paht_common.staff_auth import AuthError, JwtVerifier, Staff

ADMIN = "admin"
PROBLEM_TEXT = {
    401: "No credentials, or a token that does not verify",
    403: "The caller's role or agency does not allow this",
    404: "No such subscription or delivery",
    409: "The delivery is not failed, or its subscription is no longer active",
    422: "Invalid request: the problem names the field",
}
PROVINCE_READERS = frozenset({Role.COORDINATOR, Role.SUPERVISOR})


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: a staff member, or the operator holding the admin token."""

    staff: Staff | None

    @property
    def is_admin(self) -> bool:
        return self.staff is None

    @property
    def subject(self) -> str:
        return ADMIN if self.staff is None else self.staff.subject

    @property
    def manages_any(self) -> bool:
        """Admin or coordinator: may create and remove any subscription."""
        return self.staff is None or self.staff.role is Role.COORDINATOR

    @property
    def reads_any(self) -> bool:
        """Admin, coordinator or supervisor: may read every subscription and delivery."""
        return self.staff is None or self.staff.role in PROVINCE_READERS

    @property
    def leads(self) -> str | None:
        """The agency this caller leads, if a leader."""
        if self.staff is not None and self.staff.role is Role.LEADER:
            return self.staff.agency_id
        return None

    @property
    def agency_id(self) -> str | None:
        """The agency an officer or leader belongs to."""
        if self.staff is not None and self.staff.role in AGENCY_ROLES:
            return self.staff.agency_id
        return None

    def person(self) -> Staff:
        """The staff member behind a personal request; 403 for the admin token."""
        if self.staff is None:
            raise forbidden("personal subscriptions and preferences need a staff token")
        return self.staff


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of notify's problem+json answers."""
    return problem_responses(PROBLEM_TEXT, *statuses)


def forbidden(detail: str) -> Problem:
    """403 problem naming the credentials."""
    return Problem(403, "Forbidden", detail, field="Authorization")


class Authenticator:
    """Turns an ``Authorization: Bearer`` header into a Caller, or raises 401."""

    def __init__(self, verifier: JwtVerifier, admin_token: str) -> None:
        self._verifier = verifier
        self._admin = admin_token.encode()

    async def caller(self, authorization: str | None) -> Caller:
        """The caller named by the header; AuthError 401 when missing or invalid."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError(
                401, "a staff token or the admin token is required", field="Authorization"
            )
        if hmac.compare_digest(token.encode(), self._admin):
            return Caller(staff=None)
        return Caller(staff=await self._verifier.verify_fresh(token))


def check_webhook_owner(caller: Caller, *, agency_id: str | None, app_id: str | None) -> None:
    """403 unless the caller may register a webhook for this agency or app."""
    if app_id is not None:
        if not caller.is_admin:
            raise forbidden("an upstream app's webhook is registered with the admin token")
        return
    if caller.manages_any or (agency_id is not None and caller.leads == agency_id):
        return
    raise forbidden(f"only the leader of {agency_id} or the coordinator manages its webhooks")


def may_read_subscription(caller: Caller, record: dict[str, Any]) -> bool:
    """Whether the caller may see a subscription."""
    if caller.reads_any:
        return True
    if caller.staff is not None and record.get("user_id") == caller.staff.subject:
        return True
    return caller.leads is not None and record.get("agency_id") == caller.leads


def may_remove_subscription(caller: Caller, record: dict[str, Any]) -> bool:
    """Whether the caller may deactivate a subscription."""
    if caller.manages_any:
        return True
    if caller.staff is not None and record.get("user_id") == caller.staff.subject:
        return True
    return (
        caller.leads is not None
        and record.get("owner_kind") == "agency"
        and record.get("agency_id") == caller.leads
    )


def listing_filter(
    caller: Caller, *, agency_id: str | None, user_id: str | None, app_id: str | None
) -> tuple[str | None, str | None, str | None]:
    """The (agency, user, app) filter a caller may list with; 403 outside their scope."""
    if caller.reads_any:
        return agency_id, user_id, app_id
    staff = caller.person()
    if app_id is not None:
        raise forbidden("only province-wide roles list upstream apps' webhooks")
    if caller.leads is not None and (agency_id in (None, caller.leads)):
        return caller.leads, user_id, None
    if agency_id is not None and agency_id != staff.agency_id:
        raise forbidden(f"your token is for agency {staff.agency_id}, not {agency_id}")
    if user_id is not None and user_id != staff.subject:
        raise forbidden("officers list only their own subscriptions")
    return None, staff.subject, None


def may_retry(caller: Caller, delivery: dict[str, Any]) -> bool:
    """Leaders retry their agency's failed deliveries; the coordinator and admin any."""
    if caller.manages_any:
        return True
    return caller.leads is not None and delivery.get("agency_id") == caller.leads


async def current_caller(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Caller:
    """FastAPI dependency: the caller, through the app's ``state.authenticator``."""
    authenticator: Authenticator = request.app.state.authenticator
    return await authenticator.caller(authorization)


CallerDep = Annotated[Caller, Depends(current_caller)]
"""Route parameter type: the authenticated caller (401 problem when there is none)."""
