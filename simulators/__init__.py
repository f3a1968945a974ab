"""Device simulators: Modbus TCP servers and MQTT devices driven by the device profiles."""
