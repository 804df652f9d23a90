"""Record streams (a partitioned log such as Kafka) as a source beside the data folder."""
