"""Event authenticity: who may emit what, and an HMAC that proves who did.

Every event leaves a service signed: the relay (and the publish-on-commit path) put
``x-saga-signature: v1=<hex HMAC-SHA256 of the exact body>`` on the message, keyed
with the producing service's key. A consumer recomputes it with the key of the
producer the envelope names and checks that this producer may emit this event type
(``contracts/events.json`` → ``producers``); anything else is parked with the reason,
never handled. The signature travels with the body through the retry tiers, the
parking lot and a replay, so a legitimate event stays verifiable; a forged one is
parked again if replayed.

Keys come from the environment: ``SAGA_EVENT_KEY_<PRODUCER>``, a comma-separated list
(the first signs, every one verifies: rotate by prepending the new key, deploying every
service, then dropping the old one). A service needs its own key and the keys of the
producers it consumes from. HMAC keys are shared secrets: whoever can verify a
producer's events could also sign as it, so give each service only the keys it needs.
"""

from __future__ import annotations

import hashlib
import hmac

from django.conf import settings

from common.messaging.contracts import allowed_producers
from common.messaging.envelope import Envelope

SIGNATURE_HEADER = "x-saga-signature"
SCHEME = "v1="


class SigningKeyMissing(RuntimeError):
    """This service has no key of its own to sign what it publishes."""


def signature_of(body: bytes, key: bytes) -> str:
    return SCHEME + hmac.new(key, body, hashlib.sha256).hexdigest()


def sign(body: str | bytes) -> str:
    """The signature header value for ``body``, published by this service."""
    keys = settings.SAGA_EVENT_KEYS.get(settings.SERVICE_NAME)
    if not keys:
        raise SigningKeyMissing(
            f"no SAGA_EVENT_KEY_{settings.SERVICE_NAME.upper()}: {settings.SERVICE_NAME} cannot sign events"
        )
    return signature_of(body.encode() if isinstance(body, str) else body, keys[0])


def signed_headers(body: str | bytes) -> dict[str, str]:
    return {SIGNATURE_HEADER: sign(body)}


def distrust(envelope: Envelope, body: bytes, signature: object) -> str | None:
    """Why this delivery must not be handled (to park it with that reason), or None."""
    producer = envelope.producer
    keys = settings.SAGA_EVENT_KEYS.get(producer)
    if not keys:
        return f"no key to verify events from producer {producer!r} (SAGA_EVENT_KEY_{producer.upper()[:32]})"
    if not isinstance(signature, str) or not signature:
        return f"unsigned event: no {SIGNATURE_HEADER} header"
    if not any(hmac.compare_digest(signature, signature_of(body, key)) for key in keys):
        return f"bad signature: the body was not signed with producer {producer!r}'s key"
    allowed = allowed_producers(envelope.event_type)
    if producer not in allowed:
        return (
            f"producer {producer!r} may not emit {envelope.event_type}"
            f" (only {', '.join(sorted(allowed)) or 'nobody'})"
        )
    return None
