"""The source of truth and its rules: users, friendships, statuses, markers, the
activity window, the graph, removals (revocation records) and every read of a timeline."""
