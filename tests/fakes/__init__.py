"""Local stand-ins for vendor APIs, built from their published documentation."""
