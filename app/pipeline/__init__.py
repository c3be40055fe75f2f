"""From a change to derived data: the outbox that records events with their change, the
queue that owns them, the handlers that apply them, and the fence a worker writes under."""
