"""Gateway: polls Modbus devices, bridges MQTT-native ones, publishes reading batches through a
durable outbox."""
