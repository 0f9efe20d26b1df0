"""Model zoo: timm-style registry, one file per family."""
