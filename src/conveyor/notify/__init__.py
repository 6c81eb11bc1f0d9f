"""Notifiers: tell people when Conveyor needs them or did something on its own."""

from conveyor.notify.base import Notification, Notifier
from conveyor.notify.webhook import WebhookNotifier

__all__ = ["Notification", "Notifier", "WebhookNotifier"]
