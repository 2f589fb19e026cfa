"""Schemas of the Segment SDK endpoints: the settings document and the answer to a call."""

from marshmallow import Schema, fields


class SegmentIoSettingsSchema(Schema):
    """Where the SDK's own `Segment.io` destination sends: back to this Cairn."""

    apiKey = fields.Str(required=True)
    apiHost = fields.Str(
        required=True, metadata={"description": "host[:port][/path]/v1, no scheme"}
    )
    protocol = fields.Str(required=True, metadata={"enum": ["http", "https"]})
    addBundledMetadata = fields.Bool()
    unbundledIntegrations = fields.List(fields.Str())
    maybeBundledConfigIds = fields.Dict()


class SdkSettingsSchema(Schema):
    """The document analytics.js and the mobile SDKs load before sending anything."""

    # Only "Segment.io": Cairn has no device-mode destinations for the SDK to load.
    integrations = fields.Dict(
        keys=fields.Str(), values=fields.Nested(SegmentIoSettingsSchema), required=True
    )
    plan = fields.Dict()
    edgeFunction = fields.Dict()
    analyticsNextEnabled = fields.Bool()
    middlewareSettings = fields.Dict()
    enabledMiddleware = fields.Dict()
    metrics = fields.Dict()
    legacyVideoPluginsEnabled = fields.Bool()
    remotePlugins = fields.List(fields.Dict())
    consentSettings = fields.Dict()


class SdkCallResultSchema(Schema):
    """What a tracking call answers (as /v1/track and /v1/batch do)."""

    success = fields.Bool(required=True)
    accepted = fields.Int(required=True)
    duplicates = fields.Int(required=True)
    rejected = fields.Int(required=True)
    errors = fields.Dict(
        keys=fields.Str(), values=fields.Dict(), required=True, metadata={"description": "by index"}
    )
