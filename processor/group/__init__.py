"""Processors as one Kafka consumer group: the cameras spread over the live members (README, "Many
processors: one Kafka group")."""
