"""Configure bucket notifications on an S3 server, in one of three modes (``store.notify.mode``).

- ``rgw`` (Ceph RGW): create an SNS-style topic named like the Kafka topic with ``push-endpoint=kafka://…``,
  ``kafka-ack-level=broker`` and ``persistent=true``, then ``PutBucketNotificationConfiguration`` with a
  ``TopicConfiguration`` and up to three key filters (prefix, suffix, regex). The RGW then writes plain S3
  records (not CloudEvents) straight to Kafka; no Kawa process is involved. With ``notify.ingress_url`` the
  push endpoint is ``<ingress_url>/rgw/<topic>`` instead: the RGW POSTs each record to ``kawa ingress``
  (:mod:`kawa.store.ingress`), which appends it to the log as a CloudEvent — for RGW builds without the Kafka
  endpoint, such as Debian's.
- ``sqs`` (AWS, moto): a ``QueueConfiguration`` sends records to one SQS queue; the bridge in ``kawa up``
  (:mod:`kawa.store.bridge`) publishes them to the rule's topic as CloudEvents. AWS has no regex filter:
  the bridge applies it.
- ``poll`` (servers without push, e.g. MinIO without a configured target): nothing on the server; the
  polling bridge lists the bucket and publishes what changed.

``auto`` picks ``sqs`` if the endpoint answers SQS, else ``rgw`` if it answers SNS, else ``poll``.
Existing notification configurations of the bucket that Kawa did not make are kept.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from kawa.errors import NotificationError, StoreError, StoreUnavailable

if TYPE_CHECKING:
    from kawa.store.rules import NotificationRule
    from kawa.store.s3_types import S3Backend

log = logging.getLogger("kawa.store.s3_notify")

_KINDS = ("TopicConfigurations", "QueueConfigurations", "LambdaFunctionConfigurations")


def resolve_mode(store: S3Backend) -> str:
    mode = store.config.store.notify.mode
    if mode != "auto":
        return mode
    try:
        with store.errors("probe SQS"):
            store.service_client("sqs").list_queues(MaxResults=1)
        return "sqs"
    except StoreUnavailable:
        raise
    except StoreError:
        pass
    try:
        with store.errors("probe SNS"):
            store.service_client("sns").list_topics()
        return "rgw"
    except StoreUnavailable:
        raise
    except StoreError:
        return "poll"


def configure(store: S3Backend, rule: NotificationRule) -> NotificationRule:
    """Set ``rule`` up on the server; returns it with ``mode`` and ``target`` filled in."""
    mode = resolve_mode(store)
    events = [f"s3:{event}" for event in rule.events]
    if mode == "sqs":
        queue_url, queue_arn = ensure_queue(store)
        filters = [r for r in rule.filter_rules() if r["Name"] != "regex"]  # AWS has no regex: the bridge has
        entry: dict[str, Any] = {"Id": rule.id, "QueueArn": queue_arn, "Events": events}
        if filters:
            entry["Filter"] = {"Key": {"FilterRules": filters}}
        _replace_entry(store, rule.bucket, rule.id, "QueueConfigurations", entry)
        return rule.with_target("sqs", queue_url)
    if mode == "rgw":
        topic_arn = ensure_rgw_topic(store, rule)
        entry = {"Id": rule.id, "TopicArn": topic_arn, "Events": events}
        if rule.filter_rules():
            entry["Filter"] = {"Key": {"FilterRules": rule.filter_rules()}}
        _replace_entry(store, rule.bucket, rule.id, "TopicConfigurations", entry)
        return rule.with_target("rgw", topic_arn)
    if mode == "poll":
        from kawa.store.bridge import PollState

        state = PollState(store.config.path("store", "poll-state.sqlite"))
        try:
            if not state.is_baselined(rule.bucket):  # re-adding a rule must not swallow unreported changes
                state.baseline(store, rule.bucket)
        finally:
            state.close()
        return rule.with_target("poll", None)
    raise NotificationError(f"unknown store.notify.mode {mode!r}; use auto, rgw, sqs or poll")


def unconfigure(store: S3Backend, bucket: str, rule_id: str) -> None:
    rgw = any(r.id == rule_id and r.mode == "rgw" for r in store.registry.rules(bucket))
    _replace_entry(store, bucket, rule_id, None, None, rgw=rgw)


def _delete_rgw_notifications(store: S3Backend, physical: str) -> None:
    """Ceph's ``DELETE /<bucket>?notification`` (not in boto3): RGW 16.2 refuses an empty configuration."""
    import urllib.error
    import urllib.request

    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest

    url = f"{store.endpoint.rstrip('/')}/{physical}?notification"
    request = AWSRequest(method="DELETE", url=url)
    S3SigV4Auth(store.session.get_credentials(), "s3", store.config.store.region).add_auth(request)
    prepared = request.prepare()
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="DELETE", headers=dict(prepared.headers)),
                               timeout=store.config.store.read_timeout_s).close()
    except (urllib.error.URLError, OSError) as exc:
        raise NotificationError(f"could not remove the notifications of bucket {physical!r} on the RGW: {exc}") from exc


def ensure_queue(store: S3Backend) -> tuple[str, str]:
    """The notification queue (created if missing, with a policy letting S3 send to it): URL and ARN."""
    sqs = store.service_client("sqs")
    name = store.config.store.notify.queue_name
    with store.errors("create SQS queue"):
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "kawa-s3-notifications",
                    "Effect": "Allow",
                    "Principal": {"Service": "s3.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": arn,
                }
            ],
        }
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
    return url, arn


def kafka_push_endpoint(store: S3Backend) -> str:
    config = store.config
    if config.store.notify.kafka_endpoint:
        return config.store.notify.kafka_endpoint
    if config.log.uri.startswith("kafka://"):
        first = config.log.uri[len("kafka://") :].split(",")[0].strip("/")
        return f"kafka://{first}"
    raise NotificationError(
        "rgw notifications push to Kafka: set log.uri to kafka://host:port, or store.notify.kafka_endpoint to "
        "the broker address the RGW can reach; for an RGW built without Kafka (Debian's) run `kawa ingress` and "
        "set store.notify.ingress_url to its URL (or use store.notify.mode: poll)"
    )


def ensure_rgw_topic(store: S3Backend, rule: NotificationRule) -> str:
    """Create (or update) the RGW topic named like the Kafka topic; returns its ARN."""
    ingress_url = store.config.store.notify.ingress_url
    if ingress_url:
        from kawa.store.ingress import push_endpoint

        attributes = {"push-endpoint": push_endpoint(ingress_url, rule.topic)}
    else:
        attributes = {"push-endpoint": kafka_push_endpoint(store), "kafka-ack-level": "broker"}
    attributes |= {"persistent": "true", "OpaqueData": rule.id}
    with store.errors("create RGW topic"):
        response = store.service_client("sns").create_topic(Name=rule.topic, Attributes=attributes)
    return str(response["TopicArn"])


def _replace_entry(
    store: S3Backend, bucket: str, rule_id: str, kind: str | None, entry: dict[str, Any] | None, *, rgw: bool = False
) -> None:
    physical = store.physical(bucket)
    with store.errors("get notification configuration", bucket):
        current = store.client.get_bucket_notification_configuration(Bucket=physical)
    current.pop("ResponseMetadata", None)
    for name in _KINDS:
        kept = [item for item in current.get(name, []) if item.get("Id") != rule_id]
        if kept:
            current[name] = kept
        else:
            current.pop(name, None)
    if kind is not None and entry is not None:
        current.setdefault(kind, []).append(entry)
    if rgw and not any(current.get(name) for name in _KINDS):
        _delete_rgw_notifications(store, physical)
    else:
        with store.errors("put notification configuration", bucket):
            store.client.put_bucket_notification_configuration(Bucket=physical, NotificationConfiguration=current)
    log.info("bucket %s notification configuration now %s", bucket, {k: len(v) for k, v in current.items()})
