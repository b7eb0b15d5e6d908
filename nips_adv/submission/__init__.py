"""Competition submissions: metadata, running an entry point as the organisers do, packaging, validation."""
