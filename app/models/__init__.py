"""All models, imported here so that the metadata is complete for Alembic."""

from app.models.base import Base
from app.models.event import Event
from app.models.message import Message, MessageStatusChange, SandboxMessage, Send, Suppression
from app.models.project import ApiKey, Project
from app.models.template import Template
from app.models.user import AnonymousId, User

__all__ = [
    "AnonymousId",
    "ApiKey",
    "Base",
    "Event",
    "Message",
    "MessageStatusChange",
    "Project",
    "SandboxMessage",
    "Send",
    "Suppression",
    "Template",
    "User",
]
