"""Real protocol peers on 127.0.0.1 for the channel tests (push service, SMTP, Twilio)."""
