"""The fanout worker: a thin runner that claims outbox events and applies them
(app.pipeline.events)."""

from fanout.worker import Worker

__all__ = ["Worker"]
