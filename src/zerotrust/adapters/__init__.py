"""Framework integrations. Each adapter only builds a RequestView, calls the Guard, attaches
the Principal and translates the Outcome; everything else lives in the neutral core."""
