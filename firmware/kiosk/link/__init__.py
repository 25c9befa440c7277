# The link to the host: MQTT over a non-blocking socket, the signed message
# formats, the command gate and the outbox of journal records. It reaches
# the controller only through the calls app.py hands it.
