"""Recording the porch: camera sources, the rolling segment buffer, retention, pins and
frame-exact clip export. Knows nothing of MQTT, requests or owners."""
