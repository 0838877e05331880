"""Deterministic Job names.

A Job's name is a pure function of the workflow id, so a launch that is delivered twice asks
for the same name and the API server's 409 AlreadyExists tells the second attempt to adopt the
first one's Job instead of creating a duplicate (peers that add a timestamp or attempt number
to the name start a second Job on redelivery).
"""

from __future__ import annotations

import hashlib
import re

from scheduler.validation import DNS1123_LABEL_MAX

HASH_LENGTH = 8
PREFIX_MAX = 20


def job_name(workflow_id: str, prefix: str = "jobferry") -> str:
    """`<prefix>-<slug of the id>-<8 hex of sha256(id)>`, a DNS-1123 label of <= 63 chars.

    The hash keeps ids apart that slug to the same text ("Report_1" and "report.1").
    """
    digest = hashlib.sha256(workflow_id.encode()).hexdigest()[:HASH_LENGTH]
    head = _slug(prefix)[:PREFIX_MAX].strip("-") or "jobferry"
    room = DNS1123_LABEL_MAX - len(head) - len(digest) - 2
    slug = _slug(workflow_id)[:room].strip("-")
    return "-".join(part for part in (head, slug, digest) if part)


def _slug(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]", "-", text.lower())).strip("-")
