"""Text-to-speech: engines (``engines``) and offline English G2P for Kokoro (``g2p``)."""
