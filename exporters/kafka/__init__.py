"""Kafka as the exporter's source: shards of a consumer group, one state per partition."""
