"""The competition contract: image files, the epsilon box, and the CSV formats (CONTRACT.md)."""
