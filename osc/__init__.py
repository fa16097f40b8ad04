"""OSC control surface for the live engine (address table, server, feedback)."""
