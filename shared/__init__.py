"""What more than one orderstream service uses: events, topics, codec, settings, runtime."""
