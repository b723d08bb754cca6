"""Resources and IO managers: the Spark session, data locations, and Spark-native storage."""
