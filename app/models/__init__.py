"""All models, imported here so that the metadata is complete for Alembic."""

from app.models.audience import Audience, AudienceChange, AudienceMember
from app.models.base import Base
from app.models.campaign import (
    Campaign,
    CampaignConversion,
    CampaignHoldout,
    CampaignRun,
)
from app.models.channels import MessageEvent, ProviderRate, PushSubscription, VapidKey
from app.models.console import AuditEntry, ConsoleInvite, ConsoleMembership, ConsoleUser
from app.models.event import Event
from app.models.idempotency import IdempotencyKey
from app.models.journey import (
    Journey,
    JourneyRun,
    JourneyStepLog,
    JourneyVersion,
    JourneyWebhookCall,
)
from app.models.message import (
    Message,
    MessageStatusChange,
    SandboxMessage,
    Send,
    SendSkip,
    Suppression,
)
from app.models.project import ApiKey, Project
from app.models.rule import Rule, RuleFiring
from app.models.segment import Segment
from app.models.template import Template
from app.models.user import AnonymousId, User

__all__ = [
    "AnonymousId",
    "ApiKey",
    "Audience",
    "AudienceChange",
    "AudienceMember",
    "AuditEntry",
    "Base",
    "Campaign",
    "CampaignConversion",
    "CampaignHoldout",
    "CampaignRun",
    "ConsoleInvite",
    "ConsoleMembership",
    "ConsoleUser",
    "Event",
    "IdempotencyKey",
    "Journey",
    "JourneyRun",
    "JourneyStepLog",
    "JourneyVersion",
    "JourneyWebhookCall",
    "Message",
    "MessageEvent",
    "MessageStatusChange",
    "Project",
    "ProviderRate",
    "PushSubscription",
    "Rule",
    "RuleFiring",
    "SandboxMessage",
    "Segment",
    "Send",
    "SendSkip",
    "Suppression",
    "Template",
    "User",
    "VapidKey",
]
