"""Small shared utilities: errors, atomic writes and hashes, stable locations, safetensors loading."""
