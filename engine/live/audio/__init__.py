"""Where audio reaches the device: the lock-free ring, the sound card (PortAudio through
sounddevice), the null and memory sinks, and the output that falls back between them."""
