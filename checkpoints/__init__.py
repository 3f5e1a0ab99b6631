"""Package data: `manifest.toml`, the names of the pretrained weights that `mbd.hub` resolves."""
