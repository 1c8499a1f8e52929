"""Audit trail: one append-only record per mutating action or PHI read (topic ``kawa.audit``)."""

from kawa.audit.record import AUDIT_TOPIC, AuditRecord

__all__ = ["AUDIT_TOPIC", "AuditRecord"]
