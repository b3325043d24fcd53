"""Channel-layer routes (``channel`` protocol) for the job system's queues."""

channel_routes: dict = {}
