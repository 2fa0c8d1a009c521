"""Code generated from proto/ (scripts/generate_protos.py)."""
