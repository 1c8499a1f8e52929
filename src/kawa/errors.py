"""One error tree for Kawa.

Every error a user can meet is a :class:`KawaError`. Backends translate SDK errors (librdkafka, boto3,
sqlite, OS errors) at their boundary with ``raise ... from exc`` so callers catch one family. Messages say
what was wrong and what to do about it.
"""

from __future__ import annotations


class KawaError(Exception):
    """Root of every error Kawa raises on purpose."""


class ConfigError(KawaError):
    """The configuration (kawa.yaml, KAWA_* variables, a URI) is invalid."""


class UnknownSchemeError(ConfigError):
    """A URI names a scheme no backend is registered for."""


class AppNotFound(ConfigError):
    """No installed app (``kawa.apps`` entry point, ``apps:`` in kawa.yaml, registration) has that name."""


class BackendUnavailable(KawaError):
    """A server the backend needs (Kafka broker, S3 endpoint, ...) cannot be reached."""


# --- event log -------------------------------------------------------------------------------------


class LogError(KawaError):
    """Errors of the event log."""


class TopicNotFound(LogError):
    """The topic does not exist."""


class TopicExists(LogError):
    """The topic already exists."""


class InvalidTopicSpec(LogError):
    """Topic name, partition count, retention or cleanup policy is invalid."""


class RecordTooLarge(LogError):
    """A record is larger than the topic's or producer's record size limit."""


class InvalidPartition(LogError):
    """A partition number outside the topic's partitions."""


class CommitFailed(LogError):
    """An offset commit was refused, usually because the group rebalanced and the partition moved away."""


class OffsetOutOfRange(LogError):
    """A seek or fetch asked for an offset that the log no longer (or not yet) holds."""


class CorruptLog(LogError):
    """The on-disk log holds data that cannot be decoded and cannot be repaired automatically."""


class ProducerError(LogError):
    """A record could not be delivered."""


class PredictionLogFull(ProducerError):
    """The prediction log's bounded queue stayed full (the event log is down or slow): the prediction was not
    recorded, and the caller's event fails so that it is tried again."""


# --- events ----------------------------------------------------------------------------------------


class EventError(KawaError):
    """A record is not a valid CloudEvent or an event record cannot be parsed."""


# --- object store ----------------------------------------------------------------------------------


class StoreError(KawaError):
    """Errors of the object store."""


class BucketNotFound(StoreError):
    """The bucket does not exist."""


class BucketExists(StoreError):
    """The bucket already exists."""


class BucketNotEmpty(StoreError):
    """The bucket still holds objects."""


class InvalidBucketName(StoreError):
    """The bucket name breaks the S3 bucket naming rules."""


class InvalidKey(StoreError):
    """The object key is invalid or would escape its bucket."""


class ObjectNotFound(StoreError):
    """The object does not exist."""


class InvalidMetadata(StoreError):
    """User metadata, tags or a content type cannot be stored (non-ASCII, bad names, too large)."""


class StorageQuotaExceeded(StoreError):
    """A write would take a project's buckets over its ``storage_bytes`` quota (the message names the quota, its
    use and the fix); nothing was stored. A function's event that meets it is dead-lettered as ``over-quota``."""

    kawa_reason = "over-quota"


class StoreUnavailable(StoreError, BackendUnavailable):
    """The S3 endpoint cannot be reached (after bounded retries)."""


class NotificationError(StoreError):
    """A notification rule is invalid, or a notification could not be configured or published."""


class NotificationPending(NotificationError):
    """The object is stored, but the log did not take its notification yet: it waits in the store's durable
    outbox and is published as soon as the log takes it (no one needs to act). ``info`` is the stored object."""

    def __init__(self, message: str, info: object = None) -> None:
        super().__init__(message)
        self.info = info


# --- models and jobs -------------------------------------------------------------------------------


class ModelError(KawaError):
    """Errors of the model lifecycle: registry, predictors, serving."""


class ModelNotFound(ModelError):
    """The registered model or model version does not exist."""


class ModelAliasNotFound(ModelError):
    """The registered model has no such alias."""


class ModelLoadError(ModelError):
    """A model version's artifacts cannot be loaded (unknown flavor, missing package, corrupt file)."""


class InvalidModelInput(ModelError):
    """Inputs do not match what the model accepts (shape, datatype)."""


class TrackingUnavailable(ModelError, BackendUnavailable):
    """Tracking is switched off or its server cannot be reached."""


class JobError(KawaError):
    """Errors of training jobs and the job scheduler."""


class JobNotFound(JobError):
    """No job has this id."""


class InvalidJobSpec(JobError):
    """The job's entry point, parameters or resource request is malformed."""


class ResourceUnavailable(JobError):
    """The request can never be met by this machine (e.g. a GPU on a machine without one)."""


class QuotaExceeded(JobError):
    """The job alone asks for more than its project's quota allows (the message names the quota, its limit and use)."""


# --- functions -------------------------------------------------------------------------------------


class FunctionError(KawaError):
    """Errors of the function runtime (apps, handlers, hosts, deployments)."""


class ReplicaQuotaExceeded(FunctionError):
    """A project's functions' ``min_scale`` alone asks for more replicas than its ``function_replicas`` quota."""


class InvalidFunction(FunctionError):
    """A function's settings (trigger, filter, scale, retries) are invalid."""


class FunctionNotFound(FunctionError):
    """An app has no function of that name."""


class AppLoadError(FunctionError):
    """A ``module:app`` reference cannot be imported or does not name a :class:`kawa.App`."""


class DeployError(FunctionError):
    """Rendering or applying deployment manifests failed."""


# --- portal ----------------------------------------------------------------------------------------


class PortalError(KawaError):
    """Errors of the portal: users, credentials, permissions, capabilities it cannot reach."""


class UserNotFound(PortalError):
    """No portal user has this name."""


class UserExists(PortalError):
    """A portal user with this name already exists."""


class InvalidCredentials(PortalError):
    """A password, API token or session is wrong, expired or revoked."""


class PermissionDenied(PortalError):
    """The user's role does not allow the action."""


class NotConfigured(PortalError):
    """A capability (functions, routes, jobs, models, results) is not available in this platform."""


# --- routes ----------------------------------------------------------------------------------------


class RouteError(KawaError):
    """Errors of data routes (definitions, endpoints, processors, the route runner)."""


class InvalidRoute(RouteError):
    """A route definition is malformed: bad YAML, an unknown endpoint scheme or processor, bad options."""


class RouteNotFound(RouteError):
    """No route with this id is registered."""


class MessageRejected(RouteError):
    """A message cannot be processed and never will be (invalid, undecodable): dead-letter it at once."""


# --- projects --------------------------------------------------------------------------------------


class ProjectError(KawaError):
    """Errors of the project registry: projects, members, templates, quotas."""


class ProjectNotFound(ProjectError):
    """No project with this name is registered."""


class ProjectExists(ProjectError):
    """A project with this name already exists."""


class UnknownTemplate(ProjectError):
    """A project template name that is not one of the built-in templates."""


class MemberNotFound(ProjectError):
    """The user is not a member of the project."""


class InvalidQuota(ProjectError):
    """A quota field that does not exist or a value that is negative."""
