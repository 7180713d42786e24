"""Builds the notification service: consumer (requests → delivery log), sender (background), HTTP API.

Reads notifications.requests (notification.requested), hub.requests (only
hub.notification_preferences.change is handled; other requests are ignored) and
linking.events (only linking.service_key.rotated: the org keys of the preferences API).
Publishes notifications.outcomes: notification.sent / failed / suppressed.
"""

from __future__ import annotations


from hub_platform import db
from hub_platform.retention import RetentionRule
from hub_platform.service import HubService
from hub_platform.settings import ServiceSettings
from hub_schema import topics
from hub_schema.events.notifications import NotificationFailed, NotificationSent, NotificationSuppressed

from hub_notifications.api import build_api
from hub_notifications.handlers import make_router
from hub_notifications.render import Renderer
from hub_notifications.sender import run_sender
from hub_notifications.settings import NotificationsSettings

MIGRATIONS = db.service_migrations(__file__, "hub_notifications")


def build(settings: ServiceSettings | None = None) -> HubService:
    if not isinstance(settings, NotificationsSettings):  # generic settings (contract export): add our defaults
        settings = NotificationsSettings.model_validate(settings.model_dump()) if settings else NotificationsSettings()
    router = make_router(Renderer(settings.templates_dir), default_locale=settings.default_locale,
                         message_id_domain=settings.message_id_domain)
    service = HubService(
        settings, router,
        subscribe=[topics.NOTIFICATION_REQUESTS, topics.HUB_REQUESTS, topics.LINKING_EVENTS],
        migrations=MIGRATIONS,
        api=build_api,
        background=[run_sender],
        retention=[RetentionRule("deliveries", "updated_at", "deliveries_days",
                                 where="state IN ('sent', 'failed', 'suppressed')")],
        emits=[NotificationSent, NotificationFailed, NotificationSuppressed],
        title="hub notifications (e-mail)",
        tokens={"HUB_OPERATOR_TOKEN": settings.operator_token},
    )
    return service


def main() -> None:
    build().run()


if __name__ == "__main__":
    main()
